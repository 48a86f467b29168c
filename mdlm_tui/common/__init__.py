"""What every feature folder shares: the crash guard, the key bar, curves, the readout, the state
label, the confirmation dialog, number formatting, and the RunScreen base of the run-bound screens.

Nothing here imports torch.
"""
