"""Train: the open run, live (curves, readouts, state) and the control requests sent to its trainer.

Nothing here imports torch: the screen reads the run folder through mdlm_tui/watcher.py, and the
system pane reads core.telemetry (psutil, NVML where present).
"""
