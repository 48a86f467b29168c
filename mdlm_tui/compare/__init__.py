"""Compare: runs side by side with bootstrap intervals, against a baseline.

The numbers come from core.compare (plain Python and numpy); cli.py is `mdlm-tui compare`, table.py
its rich tables, plots.py its curves (matplotlib only when files are asked for, plotext in the terminal).
"""
