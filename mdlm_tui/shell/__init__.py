"""The app's own parts, around the feature folders: the Help screen and the type-ahead that keeps keys
typed while a screen is being built (the app itself is mdlm_tui/app.py).

Nothing here imports torch.
"""
