"""Several workers on CPU (gloo), through the installed command and torchrun's launcher: the same
training as one process, exact resumes, and a worker killed outright."""

import json
import signal
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from core.runs import read_jsonl
from tests.helpers import mdlm, start

pytestmark = pytest.mark.slow

# The smoke model, a few steps, a record every step; dropout is off in the smoke preset, so two
# workers and one process draw the same noise and must agree.
SHORT = [
    "--preset",
    "smoke",
    "--device",
    "cpu",
    "--set",
    "train.log_every=1",
    "--set",
    "train.dev_every=0",
    "--set",
    "train.checkpoint_every=4",
    "--set",
    "train.keep_checkpoints=10",
    "--set",
    "train.optimizer=lamb",
]


def train_records(run_dir):
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "train"]


def status(run_dir):
    return json.loads((run_dir / "status.json").read_text())


def weights(run_dir, step):
    return load_file(str(run_dir / "checkpoints" / f"step-{step}" / "model.safetensors"))


def wait_for_checkpoint(run_dir, step, proc, timeout=600):
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and int(latest.read_text().strip()[5:] or 0) >= step:
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint at step {step} or later in {run_dir}")


def test_two_workers_train_what_one_process_trains(tmp_path):
    steps = ["--set", "train.budget=12 steps", "--set", "train.global_batch=32"]
    one = mdlm("run", *SHORT, *steps, "--set", "train.micro_batch=32", "--run-dir", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = mdlm(
        "run",
        *SHORT,
        *steps,
        "--set",
        "train.micro_batch=16",
        "--nproc-per-node",
        "2",
        "--run-dir",
        tmp_path / "two",
    )
    assert two.returncode == 0, two.stderr
    assert "32 sequences a step = 2 worker(s) x micro-batch 16 x 1 accumulation" in two.stdout

    a, b = train_records(tmp_path / "one"), train_records(tmp_path / "two")
    assert [r["step"] for r in b] == list(range(1, 13))
    assert {r["world_size"] for r in b} == {2} and {r["world_size"] for r in a} == {1}
    assert [r["tokens"] for r in b] == [r["tokens"] for r in a]  # global counts, not one worker's
    assert [r["words"] for r in b] == [r["words"] for r in a]
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-5), x["step"]
        assert y["mask_rate"] == pytest.approx(x["mask_rate"], abs=1e-12)
    final_one, final_two = weights(tmp_path / "one", 12), weights(tmp_path / "two", 12)
    assert final_one.keys() == final_two.keys()
    for name in final_one:
        assert torch.allclose(final_one[name], final_two[name], rtol=0, atol=1e-5), name
    assert status(tmp_path / "two")["state"] == "finished" and status(tmp_path / "two")["world_size"] == 2


def test_a_stopped_two_worker_run_resumes_bit_identical(tmp_path):
    steps = [
        "--set",
        "train.budget=40 steps",
        "--set",
        "model.dropout=0.1",
    ]  # dropout: each worker's RNG counts
    straight = mdlm("run", *SHORT, *steps, "--nproc-per-node", "2", "--run-dir", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr

    run_dir = tmp_path / "stopped"
    proc = start("run", *SHORT, *steps, "--nproc-per-node", "2", "--run-dir", run_dir)
    wait_for_checkpoint(run_dir, 8, proc)
    proc.send_signal(signal.SIGTERM)  # to the launcher, which passes it to both workers
    proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM
    st = status(run_dir)
    assert st["state"] == "stopped" and 8 <= st["step"] < 40, st

    resumed = mdlm("run", "--resume", "--run-dir", run_dir, "--nproc-per-node", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from step {st['step']}" in resumed.stdout
    assert [r["step"] for r in train_records(run_dir)] == list(range(1, 41))
    a, b = weights(tmp_path / "straight", 40), weights(run_dir, 40)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_worker_killed_outright_fails_the_run_and_resume_continues_with_another_world_size(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(
        "run", *SHORT, "--set", "train.budget=400 steps", "--nproc-per-node", "2", "--run-dir", run_dir
    )
    wait_for_checkpoint(run_dir, 8, proc)
    main_pid = status(run_dir)["pid"]
    workers = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if p.pid != main_pid and "mdlm_tui" in " ".join(p.cmdline())
    ]
    assert len(workers) == 1, [p.cmdline() for p in workers]
    workers[0].send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in err, err
    st = status(run_dir)
    assert st["state"] in ("failed", "stopped") and st["step"] < 400, st
    assert "worker" in (st.get("error") or st.get("message") or "")

    # One process now: the same global sample position, with a warning about the random streams.
    resumed = mdlm(
        "run",
        "--resume",
        "--run-dir",
        run_dir,
        "--set",
        "train.budget=30 steps" if st["step"] < 30 else f"train.budget={st['step'] + 6} steps",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "was trained by 2 worker(s)" in resumed.stdout and "random streams differ" in resumed.stdout
    records = train_records(run_dir)
    assert [r["step"] for r in records] == list(range(1, records[-1]["step"] + 1))  # none missing, none twice
    assert records[-1]["world_size"] == 1 and status(run_dir)["state"] == "finished"


def test_a_global_batch_that_does_not_split_is_one_sentence(tmp_path):
    result = mdlm(
        "run", *SHORT, "--set", "train.global_batch=48", "--nproc-per-node", "2", "--run-dir", tmp_path / "r"
    )
    assert result.returncode == 2
    assert "train.global_batch (48) does not split into 2 worker(s) x train.micro_batch (16)" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--nproc-per-node", "0"], "--nproc-per-node must be at least 1"),
        (["--nproc-per-node", "2", "--nnodes", "2"], "--nnodes 2 needs --rdzv-endpoint"),
    ],
)
def test_launch_settings_that_cannot_work_are_one_sentence(tmp_path, flags, words):
    result = mdlm("run", *SHORT, *flags, "--run-dir", tmp_path / "r")
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_workers_on_gpus_where_there_are_none_is_one_sentence(tmp_path):
    result = mdlm(
        "run", "--preset", "smoke", "--device", "cuda", "--nproc-per-node", "2", "--run-dir", tmp_path / "r"
    )
    assert result.returncode == 2 and "sees no CUDA GPU" in result.stderr and "Traceback" not in result.stderr


def test_workers_refused_by_a_live_run_leave_its_status_alone(tmp_path):
    run_dir = tmp_path / "live"
    proc = start("run", *SHORT, "--set", "train.budget=5000 steps", "--run-dir", run_dir)
    wait_for_checkpoint(run_dir, 4, proc)
    result = mdlm("run", "--resume", "--run-dir", run_dir, "--nproc-per-node", "2")
    assert result.returncode == 2 and "still being trained by process" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert status(run_dir)["state"] == "running" and status(run_dir)["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
    assert status(run_dir)["state"] == "stopped"
