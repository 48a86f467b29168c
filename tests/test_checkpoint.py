import json

import pytest
import torch

from core import checkpoint as ckpt
from core.errors import UserError
from core.runs import RunDir, read_jsonl


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.out = torch.nn.Linear(4, 10)
        self.out.weight = self.emb.weight  # tied, as in the model


def _save(root, step, model, keep=3):
    opt = torch.optim.AdamW(model.parameters())
    return ckpt.save_checkpoint(root, step, model, None, opt, {"step": step}, keep=keep)


def test_latest_points_at_the_newest_and_old_ones_are_pruned(tmp_path):
    model = Tied()
    for step in (10, 20, 30, 40):
        _save(tmp_path, step, model, keep=2)
    assert [d.name for d in ckpt.step_dirs(tmp_path)] == ["step-30", "step-40"]
    assert (tmp_path / "latest").read_text().strip() == "step-40"
    assert not list(tmp_path.glob(".step-*"))


def test_round_trip_keeps_tied_weights(tmp_path):
    torch.manual_seed(0)
    model = Tied()
    _save(tmp_path, 5, model)
    other = Tied()
    where, state, ema = ckpt.load_latest(tmp_path, other, None, torch.device("cpu"), warn=print)
    assert state["step"] == 5 and ema is None
    assert torch.equal(other.emb.weight, model.emb.weight)
    assert other.out.weight is other.emb.weight


def test_truncated_latest_falls_back_with_a_warning(tmp_path):
    model = Tied()
    _save(tmp_path, 1, model)
    with torch.no_grad():
        model.emb.weight.add_(1)
    _save(tmp_path, 2, model)
    weights = tmp_path / "step-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    warnings = []
    where, state, _ = ckpt.load_latest(tmp_path, Tied(), None, torch.device("cpu"), warn=warnings.append)
    assert where.name == "step-1" and state["step"] == 1
    assert "step-2 is damaged" in warnings[0] and "model.safetensors" in warnings[0]


def test_no_usable_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="No checkpoint"):
        ckpt.load_latest(tmp_path, Tied(), None, torch.device("cpu"), warn=print)
    _save(tmp_path, 1, Tied())
    (tmp_path / "step-1" / "state.pt").write_bytes(b"")
    with pytest.raises(UserError, match="damaged"):
        ckpt.load_latest(tmp_path, Tied(), None, torch.device("cpu"), warn=lambda m: None)


def test_status_is_replaced_atomically_and_merged(tmp_path):
    run = RunDir(tmp_path)
    run.create("name: x\n")
    run.update_status(state="running", step=3)
    run.update_status(step=4)
    status = json.loads(run.status_path.read_text())
    assert (
        status["state"] == "running" and status["step"] == 4 and status["heartbeat"] > 0 and status["pid"] > 0
    )


def test_truncation_drops_later_steps_and_torn_lines(tmp_path):
    run = RunDir(tmp_path)
    run.create("name: x\n")
    for step in range(1, 6):
        run.append_metrics({"event": "train", "step": step})
    run.close()
    run.samples_path.write_text('{"step": 2, "text": "a"}\n{"step": 4, "text": "b"}\n')
    with open(run.metrics_path, "a") as f:
        f.write('{"event": "train", "st')  # a crash mid-line
    assert run.truncate_after(3) == 2
    assert [r["step"] for r in read_jsonl(run.metrics_path)] == [1, 2, 3]
    assert [r["step"] for r in read_jsonl(run.samples_path)] == [2]


def test_live_pid_tells_a_working_trainer_from_a_dead_one(tmp_path):
    import os
    import time

    run = RunDir(tmp_path)
    run.create("name: x\n")
    run.update_status(state="running")
    assert run.live_pid() == os.getpid()
    run.update_status(state="finished")
    assert run.live_pid() is None
    run.update_status(state="running", pid=2**22 + 12345)  # no such process
    assert run.live_pid() is None
    run.update_status(pid=os.getpid())
    status = json.loads(run.status_path.read_text())
    status["heartbeat"] = time.time() - 3600
    run.status_path.write_text(json.dumps(status))
    assert run.live_pid() is None  # a stale heartbeat: the trainer is gone or hung


def test_truncation_keeps_a_record_whose_step_is_no_number(tmp_path):
    """A resume must not trip over a foreign line: it is neither judged nor a traceback."""
    run = RunDir(tmp_path)
    run.create("name: x\n")
    for record in ({"step": 1}, {"step": "abc"}, {"step": 5}):
        run.append_metrics(record)
    run.close()
    assert run.truncate_after(3) == 1
    assert [r["step"] for r in read_jsonl(run.metrics_path)] == [1, "abc"]
