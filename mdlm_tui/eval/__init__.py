"""Eval: the open run's evaluation reports, compared by checkpoint, and a new evaluation started here.

torch enters only through runner.py, which imports the engine (core.evaluate, core.scoring...)
inside its functions; screen.py imports runner only inside its worker thread. reports.py (the saved
reports and checkpoints), metrics.py (labels and the CLI's printing), table.py and history.py
(the plot of a suite's reports against the step) are plain Python.
"""
