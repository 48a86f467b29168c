"""The app's screens, one module each: runs, train, help (and configure, eval, samples)."""
