"""Configure: choose a preset, edit the form, see the schedule and masking previews, start a run.

torch enters only through previews.py, whose functions import it when called; screen.py imports
previews only inside its worker threads. form.py and plots.py are plain widgets, and the run is
launched through mdlm_tui/launch.py, which does not import torch.
"""
