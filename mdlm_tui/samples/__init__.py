"""Samples: the open run's unmasking traces, replayed step by step, and new samples drawn here.

torch enters only through runner.py: CheckpointSampler imports core.sampling and loads the model
inside its methods, which screen.py calls only in worker threads (importing runner itself is light).
traces.py (reading trace files) and replay.py (the replay widget) are plain Python.
"""
