"""`mdlm-tui sweep`: a sweep file's plan (expansion, names, validation), and its runs trained for real
on the smoke recipe with budgets of a few steps: finished, skipped on a rerun, resumed after the sweep
is stopped or killed, and a failing run reported while the other finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.config import load_config, to_dict
from core.errors import UserError
from core.runs import ACTIVE_STATES
from core.sweep import load_plan, select
from tests.helpers import error_line, wait_until

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "presets" / "sweeps" / "paper-ablation.yaml"

# a few steps, a checkpoint every few, a metrics record every step: seconds a run on one core
TINY = """\
base: smoke
set:
  train.budget: {budget} steps
  train.checkpoint_every: 4
  train.log_every: 1
  train.dev_every: 0
  train.threads: 1
"""


def write(folder: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def sweep(folder: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdlm_tui", "sweep", *map(str, args)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )


def start_sweep(folder: Path, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mdlm_tui", "sweep", *map(str, args)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def status(run: Path) -> dict:
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-replace on a slow disk
        return {}


def training_past(run: Path, step: int):
    return lambda: status(run).get("state") == "running" and status(run).get("step", 0) >= step


def train_steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r.get("event") == "train"]


def index(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())


# ---------------------------------------------------------------- the plan


def test_grid_times_seeds_names_each_run_by_what_varies(tmp_path):
    path = write(
        tmp_path,
        TINY.format(budget=12)
        + "grid:\n  schedule.name: [linear, cosine]\n  masking.kind: [frequency, uniform]\nseeds: [0, 1]\n",
    )
    plan = load_plan(str(path))
    names = [run.name for run in plan.runs]
    assert names == [
        f"{s}-{m}-seed{seed}"
        for s in ("linear", "cosine")
        for m in ("frequency", "uniform")
        for seed in (0, 1)
    ]
    one = plan.runs[3]  # linear, uniform, seed 1
    assert one.overrides == {"schedule.name": "linear", "masking.kind": "uniform", "seed": 1}
    assert (one.config.schedule.name, one.config.masking.kind, one.config.seed) == ("linear", "uniform", 1)
    assert one.config.train.budget == "12 steps" and one.config.name == one.name
    assert [run.name for run in load_plan(str(path)).runs] == names  # stable across reruns


def test_runs_rows_times_grid_leave_out_a_key_that_follows_another(tmp_path):
    path = write(
        tmp_path,
        TINY.format(budget=12)
        + textwrap.dedent(
            """\
        runs:
          - {schedule.name: linear}
          - {schedule.name: bimodal, schedule.power: 0, data.seq_len: 32}
          - {schedule.name: bimodal, schedule.power: 0.1, data.seq_len: 32}
        grid:
          masking.kind: [frequency, uniform]
        """
        ),
    )
    plan = load_plan(str(path))
    # data.seq_len follows the schedule: it tells no runs apart, so it is in no name
    assert [run.name for run in plan.runs] == [
        "linear-frequency",
        "linear-uniform",
        "bimodal-p0-frequency",
        "bimodal-p0-uniform",
        "bimodal-p0.1-frequency",
        "bimodal-p0.1-uniform",
    ]
    assert plan.runs[5].config.data.seq_len == 32 and plan.runs[5].config.schedule.power == 0.1
    assert plan.runs[0].config.data.seq_len == 64  # the smoke preset's
    named = write(
        tmp_path,
        TINY.format(budget=12)
        + "runs:\n  - {name: mine, seed: 3}\n  - {seed: 4}\ngrid:\n  train.lr: [0.001, 0.002]\n",
        "named.yaml",
    )
    # a name stands for its row's values; the grid's still follow it
    assert [(r.name, r.config.name, r.config.seed) for r in load_plan(str(named)).runs] == [
        ("mine-lr0.001", "mine-lr0.001", 3),
        ("mine-lr0.002", "mine-lr0.002", 3),
        ("seed4-lr0.001", "seed4-lr0.001", 4),
        ("seed4-lr0.002", "seed4-lr0.002", 4),
    ]


@pytest.mark.parametrize(
    "body, said",
    [
        (
            "gird:\n  schedule.name: [linear]\n",
            "sweep.yaml has an unknown key 'gird' (did you mean 'grid'?)",
        ),
        (
            "grid:\n  schedule.name: [linear, lnear]\n",
            "sweep.yaml, grid schedule.name: schedule.name must be",
        ),
        ("grid:\n  schedule.power: [1, -1]\n", "sweep.yaml, grid schedule.power: schedule.power must be"),
        ("grid: {}\n", "sweep.yaml: grid is empty"),
        ("grid:\n  schedule.name: []\n", "sweep.yaml: grid schedule.name must be a non-empty list"),
        (
            "grid:\n  schedule.name: [linear]\nruns:\n  - {train.bugdet: 3 steps}\n",
            "sweep.yaml, runs item 1, train.bugdet: Unknown config key 'train.bugdet'. "
            "Did you mean 'train.budget'?",
        ),
        (
            "runs:\n  - {name: a, schedule.name: linear}\n  - {name: a, schedule.name: cosine}\n",
            "sweep.yaml: two runs would be named 'a' (runs item 1 and runs item 2)",
        ),
        ("grid:\n  schedule.name: [linear, linear]\n", "sweep.yaml: grid schedule.name lists 'linear' twice"),
    ],
)
def test_a_bad_sweep_file_is_one_sentence_naming_the_file_and_key(tmp_path, body, said):
    path = write(tmp_path, TINY.format(budget=12) + body)
    with pytest.raises(UserError) as refused:
        load_plan(str(path))
    assert str(refused.value).startswith(said), str(refused.value)


def test_a_bad_preset_or_value_is_refused_before_anything_starts(tmp_path):
    path = write(tmp_path, "base: smok\ngrid:\n  schedule.name: [linear]\n")
    result = sweep(tmp_path, path.name)
    assert error_line(result).startswith(
        "error: sweep.yaml, base: Unknown preset 'smok'. Did you mean 'smoke'?"
    )
    bad = write(tmp_path, TINY.format(budget=12) + "grid:\n  train.lr: [0.001, fast]\n", "bad.yaml")
    line = error_line(sweep(tmp_path, bad.name))
    assert line == "error: bad.yaml, grid train.lr: train.lr must be a number, got 'fast'."
    assert not (tmp_path / "runs").exists()


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path):
    path = write(tmp_path, TINY.format(budget=12) + "grid:\n  schedule.name: [linear, cosine]\n")
    result = sweep(tmp_path, path.name, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "2 runs from the preset smoke, in runs/sweep" in result.stdout
    assert "linear  schedule.name=linear  [starts]" in result.stdout
    assert "cosine  schedule.name=cosine  [starts]" in result.stdout
    shipped = sweep(tmp_path, "paper-ablation", "--scale", "paper", "--dry-run")  # found by its name
    assert shipped.returncode == 0, shipped.stderr
    assert "10 runs from the preset paper, in runs/paper-ablation-paper" in shipped.stdout
    assert not (tmp_path / "runs").exists()


def test_only_picks_runs_and_their_order(tmp_path):
    path = write(tmp_path, TINY.format(budget=12) + "grid:\n  schedule.name: [linear, cosine, gaussian]\n")
    plan = load_plan(str(path))
    assert select(plan, []) == ["linear", "cosine", "gaussian"]
    assert select(plan, ["gaussian", "c*,gaussian,linear"]) == ["gaussian", "cosine", "linear"]
    with pytest.raises(UserError, match="--only cosin matches no run of sweep.yaml .did you mean 'cosine'"):
        select(plan, ["cosin"])
    result = sweep(tmp_path, path.name, "--only", "gaussian,linear", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = [line.split()[0] for line in result.stdout.splitlines()[1:4]]
    assert lines == ["gaussian", "linear", "cosine"]  # in the order they would train
    assert "cosine    schedule.name=cosine  [not in --only: starts]" in result.stdout


def test_the_command_lines_set_reaches_every_run(tmp_path):
    path = write(tmp_path, TINY.format(budget=12) + "grid:\n  schedule.name: [linear, cosine]\n")
    plan = load_plan(str(path), extra=["train.lr=0.002", "data.seq_len=32"])
    assert [(run.config.train.lr, run.config.data.seq_len) for run in plan.runs] == [(0.002, 32)] * 2
    with pytest.raises(UserError, match="--set sets schedule.name, which the runs vary"):
        load_plan(str(path), extra=["schedule.name=cosine"])
    with pytest.raises(UserError, match="--set train.lr must be KEY=VALUE"):
        load_plan(str(path), extra=["train.lr"])
    line = error_line(sweep(tmp_path, path.name, "--set", "train.lr=fast", "--dry-run"))
    assert line == "error: sweep.yaml, --set train.lr: train.lr must be a number, got 'fast'."


def test_paper_ablation_is_ten_valid_runs_at_both_scales():
    small = load_plan(str(ABLATION))
    paper = load_plan(str(ABLATION), "paper")
    for plan in (small, paper):
        assert len(plan.runs) == 10 and plan.suites == ["blimp", "supplement"]
        assert {(r.config.schedule.name, r.config.schedule.power) for r in plan.runs} == {
            ("linear", 1),
            ("cosine", 1),
            ("bimodal", 0),
            ("bimodal", 0.1),
            ("bimodal", 1),
        }
        assert sorted(r.config.masking.kind for r in plan.runs) == ["frequency"] * 5 + ["uniform"] * 5
    assert small.scale == "cpu-small" and small.default_dir == Path("runs/paper-ablation-cpu-small")
    row = next(r for r in small.runs if r.name == "bimodal-p0-frequency")
    cpu_small = to_dict(load_config("cpu-small"))
    assert row.config.data.seq_len == cpu_small["data"]["seq_len"]
    assert row.config.train.budget == cpu_small["train"]["budget"]
    assert row.config.model.hidden_size == cpu_small["model"]["hidden_size"]

    # at the paper scale each frequency row is its paper preset, but for its name and description
    def same(config, preset):
        mine, theirs = to_dict(config), to_dict(load_config(preset))
        for values in (mine, theirs):
            values.pop("name"), values.pop("description")
        assert mine == theirs

    by_name = {r.name: r.config for r in paper.runs}
    for name, preset in (
        ("bimodal-p0-frequency", "bimodal-p0"),
        ("bimodal-p0.1-frequency", "bimodal-p0.1"),
        ("linear-p1-frequency", "linear"),
        ("cosine-p1-frequency", "cosine"),
    ):
        same(by_name[name], preset)
    assert by_name["bimodal-p0-uniform"].masking.kind == "uniform"


def test_each_run_gets_its_own_gpu_and_cpu_runs_share_the_cores(tmp_path, monkeypatch):
    from mdlm_tui.sweep_cli import _slots

    plan = load_plan(str(write(tmp_path, TINY.format(budget=12) + "grid:\n  seed: [1, 2]\n")))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert _slots(None, plan) == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    assert [slot["CUDA_VISIBLE_DEVICES"] for slot in _slots(3, plan)] == ["3", "5", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: one run at a time unless told
    assert _slots(None, plan) == [{}]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert _slots(2, plan) == [{"OMP_NUM_THREADS": "4"}] * 2


# ---------------------------------------------------------------- running


def test_a_two_run_sweep_finishes_and_a_rerun_skips_it(tmp_path):
    path = write(
        tmp_path, TINY.format(budget=8) + "grid:\n  schedule.name: [linear, cosine]\nsuites: [builtin]\n"
    )
    folder = tmp_path / "runs" / "sweep"
    first = sweep(tmp_path, path.name, "--only", "cosine")  # one run now, the other left pending
    assert first.returncode == 0, first.stdout + first.stderr
    assert "cosine: finished at step 8, loss " in first.stdout and "linear:" not in first.stdout
    assert not (folder / "linear").exists()
    assert [r["state"] for r in index(folder)["runs"]] == ["pending", "evaluated"]

    result = sweep(tmp_path, path.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cosine: evaluated earlier (builtin " in result.stdout
    for name, said in (("linear", result.stdout), ("cosine", first.stdout)):
        assert f"{name}: finished at step 8, loss " in said
        assert f"{name}: evaluated: builtin " in said
        assert status(folder / name)["state"] == "finished"
        assert train_steps(folder / name) == list(range(1, 9))
    saved = index(folder)
    assert (
        saved["name"] == "sweep"
        and saved["file"] == "sweep.yaml"
        and (folder / "sweep.yaml").read_text() == path.read_text()
    )
    assert saved["sweep"]["grid"] == {"schedule.name": ["linear", "cosine"]}
    assert [
        (r["name"], r["path"], r["overrides"], r["state"], r["error"], r["step"]) for r in saved["runs"]
    ] == [
        ("linear", "linear", {"schedule.name": "linear"}, "evaluated", None, 8),
        ("cosine", "cosine", {"schedule.name": "cosine"}, "evaluated", None, 8),
    ]
    assert 0 <= saved["runs"][0]["eval"]["builtin"] <= 1
    metrics = (folder / "linear" / "metrics.jsonl").read_bytes()

    again = sweep(tmp_path, path.name)
    assert again.returncode == 0, again.stderr
    assert "linear: evaluated earlier (builtin " in again.stdout and "started" not in again.stdout
    assert (folder / "linear" / "metrics.jsonl").read_bytes() == metrics
    assert [r["state"] for r in index(folder)["runs"]] == ["evaluated", "evaluated"]


def test_a_stopped_or_killed_sweep_resumes_its_runs(tmp_path):
    path = write(tmp_path, TINY.format(budget=24) + "grid:\n  schedule.name: [linear, cosine]\n")
    run = tmp_path / "runs" / "sweep" / "linear"

    # Ctrl-C: the run saves a checkpoint and stops, and the sweep says how to continue
    first = start_sweep(tmp_path, path.name)
    wait_until(training_past(run, 1), "the first run training")
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 130, out + err
    assert "`mdlm-tui sweep" in err and "continues the sweep" in err
    stopped_at = status(run)["step"]
    assert status(run)["state"] == "stopped"
    assert [r["state"] for r in index(run.parent)["runs"]] == ["stopped", "pending"]

    # kill -9: the run is told by Linux, checkpoints and stops; nothing trains on unseen
    second = start_sweep(tmp_path, path.name)
    wait_until(training_past(run, stopped_at + 1), "the resumed run training")
    os.kill(second.pid, signal.SIGKILL)
    second.communicate(timeout=60)
    wait_until(lambda: status(run).get("state") not in ACTIVE_STATES, "the orphaned run stopping")
    assert status(run)["state"] == "stopped" and status(run)["step"] < 24

    third = sweep(tmp_path, path.name)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "linear: resumed from step-" in third.stdout and "cosine: started" in third.stdout
    assert train_steps(run) == list(range(1, 25))  # continuous: no step missing or repeated
    assert [r["state"] for r in index(run.parent)["runs"]] == ["finished", "finished"]
    assert (run / "sweep.log").read_text().count("--resume") == 2


def test_a_failing_run_is_reported_and_the_other_finishes(tmp_path):
    path = write(tmp_path, TINY.format(budget=6) + "grid:\n  data.path: [no/such/corpus, null]\n")
    result = sweep(tmp_path, path.name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "corpus: failed: " in result.stdout and "no-path: finished at step 6" in result.stdout
    assert "error: 1 of 2 runs failed; their logs are runs/sweep/NAME/sweep.log" in result.stderr
    assert "`mdlm-tui sweep sweep.yaml --retry-failed` trains corpus again" in result.stderr
    failed, finished = index(tmp_path / "runs" / "sweep")["runs"]
    assert (failed["name"], failed["state"], finished["state"]) == ("corpus", "failed", "finished")
    assert "no/such/corpus" in failed["error"]

    again = sweep(tmp_path, path.name)  # reported again, not retried
    assert again.returncode == 1
    assert "corpus: failed earlier: " in again.stdout and "started" not in again.stdout
