"""Small widgets shared by the screens: the state label, curves, the system pane, a confirmation dialog."""
