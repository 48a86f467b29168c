"""train.compile: torch.compile where it works; where it fails, one sentence and the same training."""

import torch

from core.config import apply_overrides, load_config
from core.runs import RunDir, read_jsonl
from core.trainer import start

SETTINGS = ["train.budget=3 steps", "train.log_every=1", "train.dev_every=0", "train.threads=1"]


def losses(run_dir):
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "train"]


def test_a_compilation_that_fails_falls_back_to_the_same_training(tmp_path, monkeypatch):
    start(
        apply_overrides(load_config("smoke"), SETTINGS),
        RunDir(tmp_path / "eager"),
        "cpu",
        False,
        log=lambda _: None,
    )

    def failing_compile(model, **options):
        def compiled(*args, **kwargs):
            raise RuntimeError("BackendCompilerFailed: no working C++ compiler found\nmore detail")

        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    lines = []
    cfg = apply_overrides(load_config("smoke"), [*SETTINGS, "train.compile=true"])
    start(cfg, RunDir(tmp_path / "compiled"), "cpu", False, log=lines.append)
    said = [line for line in lines if "train.compile failed" in line]
    assert said == [
        "warning: train.compile failed (BackendCompilerFailed: no working C++ compiler found); "
        "training continues without compiling"
    ]
    # the failed first step is taken again from the same data and noise
    assert losses(tmp_path / "compiled") == losses(tmp_path / "eager")
