"""`mdlm-tui compare` on run folders written by hand: metrics.jsonl and eval reports with credits, so
every number in the table, the differences and the JSON is known exactly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from core.compare import compare_runs, curves, load_runs
from tests.helpers import error_line, mdlm

SETTINGS = {"backend": "pll", "limit": None, "weights": "ema", "rate_value": None, "draws": None}


def write_run(
    path: Path, losses: list[float], dev: dict[int, float] | None = None, words: bool = True
) -> Path:
    """A run folder: config.yaml and a training record a step (tokens 100 a step, one second a step)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"name: {path.name}\n")
    records = []
    for step, loss in enumerate(losses, start=1):
        record = {"event": "train", "step": step, "tokens": 100 * step, "loss": loss, "time": 1000.0 + step}
        records.append({**record, "elapsed": float(step), **({"words": 70 * step} if words else {})})
        if dev and step in dev:
            records.append({"event": "dev", "step": step, "dev_loss": dev[step], "time": 1000.5 + step})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_report(
    run: Path,
    suite: str,
    step: int,
    credits: dict[str, list[float]],
    fields: dict[str, str] | None = None,
    with_credits: bool = True,
    metric: str = "accuracy",
    made: int = 0,
    by_field: bool = False,
    **settings,
) -> Path:
    """An eval report as core.evaluate saves it: per-UID accuracies from the credits, their macro."""
    settings = {**SETTINGS, **settings}
    per_uid = {
        uid: {"accuracy": sum(v) / len(v), "n": len(v), "field": (fields or {}).get(uid), "term": None}
        for uid, v in credits.items()
    }
    fields_means: dict[str, list[float]] = {}
    for result in per_uid.values():
        if result["field"]:
            fields_means.setdefault(result["field"], []).append(result["accuracy"])
    per_field = {f: sum(v) / len(v) for f, v in fields_means.items()}
    means = list(per_field.values()) if by_field else [r["accuracy"] for r in per_uid.values()]
    report = {
        "suite": suite,
        "per_uid": per_uid,
        "per_field": per_field,
        "macro": sum(means) / len(means),
        "n": sum(r["n"] for r in per_uid.values()),
        "seconds": 1.0,
        "checkpoint": str(run / "checkpoints" / f"step-{step}"),
        "skipped": 0,
        "metric": metric,
        "step": step,
        "time": 1_800_000_000.0 + made,
        "credits": credits if with_credits else None,
        **settings,
    }
    (run / "eval").mkdir(exist_ok=True)
    path = run / "eval" / f"{suite}-step-{step}-pll-{made}.json"
    path.write_text(json.dumps(report))
    return path


FIELDS = {"u1": "syntax", "u2": "semantics"}


@pytest.fixture
def two_runs(tmp_path) -> tuple[Path, Path]:
    """base: blimp 0.5 (u1 all right, u2 all wrong), an older step and a report with other settings
    beside; ewok without credits. better: blimp 1.0, ewok 0.75 with credits."""
    base = write_run(tmp_path / "base", [3.0, 2.5, 2.0, 1.5], dev={2: 2.8, 4: 2.2})
    better = write_run(tmp_path / "better", [3.0, 2.4, 1.9, 1.2], dev={2: 2.7, 4: 2.0})
    write_report(base, "blimp", 2, {"u1": [1, 0, 0, 0], "u2": [0, 0, 0, 0]}, FIELDS)
    write_report(base, "blimp", 4, {"u1": [1] * 4, "u2": [0] * 4}, FIELDS, made=1)
    write_report(base, "blimp", 4, {"u1": [0, 0], "u2": [0, 0]}, FIELDS, made=2, limit=2)
    write_report(base, "ewok", 4, {"e1": [1, 0], "e2": [1, 1]}, with_credits=False)
    write_report(better, "blimp", 4, {"u1": [1] * 4, "u2": [1] * 4}, FIELDS)
    write_report(better, "ewok", 4, {"e1": [1, 1], "e2": [1, 0]})
    return base, better


def mdlm_compare(*args) -> subprocess.CompletedProcess:
    return mdlm("compare", *args)


def test_the_table_holds_each_runs_numbers_and_intervals(two_runs):
    base, better = two_runs
    comparison = compare_runs(load_runs([base, better], []), fields=True)
    assert comparison.baseline == "base" and comparison.suites == ["blimp", "ewok"]
    blimp = comparison.scores["base"]["blimp"]
    assert (blimp.step, blimp.settings["limit"], blimp.macro) == (4, None, 0.5)  # not the limit-2 report
    assert (blimp.low, blimp.high) == (0.5, 0.5)
    assert {f: (s.value, s.low, s.high) for f, s in blimp.fields.items()} == {
        "semantics": (0.0, 0.0, 0.0),
        "syntax": (1.0, 1.0, 1.0),
    }
    ewok = comparison.scores["base"]["ewok"]
    assert (ewok.macro, ewok.low, ewok.high) == (0.75, None, None)  # a report without credits
    assert comparison.run("better").dev_loss == 2.0 and comparison.run("base").dev_step == 4

    found = comparison.differences["better"]
    assert found["dev_loss"].value == pytest.approx(-0.2)
    assert (found["blimp"].value, found["blimp"].low, found["blimp"].high) == (0.5, 0.5, 0.5)
    assert found["blimp"].paired and found["blimp"].real
    assert (found["ewok"].value, found["ewok"].low, found["ewok"].real) == (0.0, None, None)
    assert "base" not in comparison.differences


def test_a_suite_whose_macro_averages_its_fields(tmp_path):
    run = write_run(tmp_path / "run", [2.0])
    credits = {"x1": [1] * 4, "x2": [1] * 4, "y1": [0] * 4}  # UIDs: 2/3 right; fields x and y: 1/2
    write_report(run, "entity_tracking", 1, credits, {"x1": "x", "x2": "x", "y1": "y"}, by_field=True)
    score = compare_runs(load_runs([run], [])).scores["run"]["entity_tracking"]
    assert (score.macro, score.low, score.high) == (0.5, 0.5, 0.5)


def test_a_report_as_the_evaluator_saves_it(tmp_path):
    """The JSON core.eval_report writes (credits one line a UID, 0 and 1 as ints) gives its interval."""
    from core.eval_report import EvalReport, compact_credits, report_json

    run = write_run(tmp_path / "run", [2.0])
    credits = {"u1": [1.0] * 5, "u2": [0.0] * 5}
    per_uid = {
        uid: {"accuracy": sum(v) / 5, "n": 5, "field": None, "term": None} for uid, v in credits.items()
    }
    report = EvalReport("blimp", per_uid, {}, 0.5, 10, 1.0, "pll", "ckpt", weights="ema", step=1, time=1.8e9)
    report.credits = compact_credits(credits)
    (run / "eval").mkdir()
    (run / "eval" / "blimp-step-1-pll-20270115T080000.json").write_text(report_json(report.to_dict()))
    score = compare_runs(load_runs([run], [])).scores["run"]["blimp"]
    assert (score.step, score.macro, score.low, score.high) == (1, 0.5, 0.5, 0.5)


def test_the_command_prints_the_tables(two_runs):
    base, better = two_runs
    result = mdlm_compare(base, better, "--fields")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "base (baseline)" in out and "2.2000" in out and "50.0 [50.0, 50.0]" in out
    assert "100.0 [100.0, 100.0]" in out and "75.0" in out
    assert "+50.0 [+50.0, +50.0]*" in out and "-0.2000" in out
    assert "blimp by field" in out and "syntax" in out
    assert max(len(line) for line in out.splitlines()) <= 120  # not a terminal: 120 columns


def test_json_holds_every_number(two_runs, tmp_path):
    base, better = two_runs
    out = tmp_path / "compare.json"
    result = mdlm_compare(better, base, "--baseline", "base", "--json", out)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["baseline"] == "base" and data["level"] == 0.95 and data["resamples"] == 1000
    assert [run["name"] for run in data["runs"]] == ["better", "base"]
    better_run = data["runs"][0]
    assert better_run["dev_loss"] == 2.0 and better_run["step"] == 4
    assert better_run["suites"]["blimp"] | {"report": None} == {
        "metric": "accuracy",
        "macro": 1.0,
        "low": 1.0,
        "high": 1.0,
        "n": 8,
        "step": 4,
        "report": None,
        "settings": SETTINGS,
        "other_settings": False,
        "has_credits": True,
    }
    assert better_run["differences"]["blimp"] == {
        "value": 0.5,
        "low": 0.5,
        "high": 0.5,
        "paired": True,
        "real": True,
    }
    assert data["suites"]["blimp"]["settings"] == SETTINGS
    assert data["runs"][1]["differences"] == {}


def test_a_baseline_folder_not_among_the_runs_joins_them(two_runs):
    base, better = two_runs
    comparison_json = mdlm_compare(better, "--baseline", base)
    assert comparison_json.returncode == 0, comparison_json.stderr
    assert "better" in comparison_json.stdout and "base (baseline)" in comparison_json.stdout


def test_a_sweep_is_a_group(tmp_path):
    sweep = tmp_path / "sweep"
    for name, last in (("lr-1", 1.0), ("lr-2", 2.0)):
        write_run(sweep / name, [3.0, last], dev={2: last})
    (sweep / "sweep.json").write_text(
        json.dumps(
            {
                "runs": [
                    {"name": "lr-1", "path": "lr-1", "overrides": {"train.lr": 1}},
                    {"name": "lr-2", "path": str(sweep / "lr-2"), "overrides": {"train.lr": 2}},
                    {"name": "lr-3", "path": "lr-3", "overrides": {"train.lr": 3}},  # not started yet
                ]
            }
        )
    )
    single = write_run(tmp_path / "single", [3.0, 1.5])
    notes: list[str] = []
    runs = load_runs([single, sweep], notes)
    comparison = compare_runs(runs, notes=notes)
    assert [run.name for run in runs] == ["single", "lr-1", "lr-2"]
    assert comparison.groups == {"sweep": ["lr-1", "lr-2"]}
    assert runs[1].overrides == {"train.lr": 1}
    assert notes == ["sweep: 1 of its 3 runs has not started and is left out."]
    # a folder of runs without an index is a group too
    (sweep / "sweep.json").unlink()
    assert [run.group for run in load_runs([sweep], [])] == ["sweep", "sweep"]


def test_runs_of_one_name_are_told_apart(tmp_path):
    for place in ("a", "b"):
        write_run(tmp_path / place / "run", [2.0])
    runs = load_runs([tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "a" / "run"], [])
    assert [run.name for run in runs] == ["a/run", "b/run"]  # and the one given twice is there once


def test_curves_against_each_x(two_runs):
    base, better = two_runs
    comparison = compare_runs(load_runs([base, better], []))
    by_step = curves(comparison, "step")
    assert sorted(by_step) == ["dev_loss", "eval-blimp", "eval-ewok", "loss"]
    assert by_step["loss"][0].xs == [1, 2, 3, 4] and by_step["loss"][0].ys == [3.0, 2.5, 2.0, 1.5]
    assert by_step["eval-blimp"][0].xs == [2, 4] and by_step["eval-blimp"][0].ys == [0.125, 0.5]
    assert curves(comparison, "tokens")["dev_loss"][0].xs == [200.0, 400.0]  # read off the training records
    assert curves(comparison, "words")["loss"][1].xs == [70.0, 140.0, 210.0, 280.0]
    assert curves(comparison, "time")["loss"][0].xs == [1.0, 2.0, 3.0, 4.0]


def test_plots_are_written_as_png_and_svg(two_runs, tmp_path):
    base, better = two_runs
    folder = tmp_path / "plots" / "new"
    result = mdlm_compare(base, better, "--plots", folder, "--x", "tokens")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in folder.iterdir())
    stems = ("dev_loss", "eval-blimp", "eval-ewok", "loss")
    assert names == sorted(f"{stem}.{suffix}" for stem in stems for suffix in ("png", "svg"))
    assert all((folder / name).stat().st_size > 1000 for name in names)
    assert (folder / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (folder / "loss.svg").read_text()


def test_terminal_curves_on_request(two_runs):
    base, better = two_runs
    result = mdlm_compare(base, better, "--curves")
    assert result.returncode == 0, result.stderr
    assert "training loss" in result.stdout and "\x1b[" not in result.stdout  # no colours in a file


def test_words_refused_when_no_run_counted_them(two_runs, tmp_path):
    old = write_run(tmp_path / "old", [3.0, 2.0], words=False)
    line = error_line(mdlm_compare(old, "--plots", tmp_path / "plots", "--x", "words"))
    assert (
        line == "error: None of these runs counted words in its metrics; plot against step, tokens or time."
    )
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "does not exist; give run folders or sweep folders."),
        ("empty", "is neither a run (no config.yaml) nor a sweep (no sweep.json, no run folders in it)."),
        ("no-metrics", "has no metrics yet (metrics.jsonl is missing or empty)."),
        ("garbage-metrics", "has no readable metrics (2 unreadable lines skipped in metrics.jsonl)."),
        ("bad-sweep", "is not a sweep index (a JSON object whose runs each have a path)."),
        ("baseline", "--baseline nowhere is neither one of the runs compared nor a run folder."),
        ("x", "--x must be one of step, tokens, words, time, got 'epochs'."),
    ],
)
def test_bad_input_is_one_sentence(two_runs, tmp_path, case, expected):
    base, _ = two_runs
    target, extra = tmp_path / case, []
    if case == "empty":
        target.mkdir()
    elif case in ("no-metrics", "garbage-metrics"):
        target.mkdir()
        (target / "config.yaml").write_text("name: x\n")
        if case == "garbage-metrics":
            (target / "metrics.jsonl").write_bytes(b'{"step": "eight"}\n\xff\xfe\n')
    elif case == "bad-sweep":
        target.mkdir()
        (target / "sweep.json").write_text("{not json")
    elif case in ("baseline", "x"):
        target = base
        extra = ["--baseline", "nowhere"] if case == "baseline" else ["--x", "epochs"]
    line = error_line(mdlm_compare(target, *extra, "--json", tmp_path / "out.json"))
    assert line.endswith(expected), line
    assert not (tmp_path / "out.json").exists()


def test_unwritable_destinations_write_nothing(two_runs, tmp_path):
    base, better = two_runs
    a_file = tmp_path / "file"
    a_file.write_text("")
    out = tmp_path / "out.json"
    line = error_line(mdlm_compare(base, better, "--json", a_file / "out.json", "--plots", tmp_path / "p"))
    assert line == f"error: Cannot write --json {a_file / 'out.json'}: {a_file} is not a folder."
    assert not (tmp_path / "p").exists()
    line = error_line(mdlm_compare(base, better, "--json", out, "--plots", a_file))
    assert line == f"error: --plots {a_file} is a file; give a folder to write the plots into."
    assert not out.exists()
    line = error_line(mdlm_compare(base, better, "--json", tmp_path))
    assert line.startswith(f"error: --json {tmp_path} is a folder")


def test_reports_with_garbage_are_skipped_not_fatal(two_runs):
    base, better = two_runs
    (base / "eval" / "junk.json").write_text("{oops")
    bad = json.loads((better / "eval" / "ewok-step-4-pll-0.json").read_text())
    bad["credits"] = {"e1": [1, 1], "e2": ["x"]}
    (better / "eval" / "ewok-step-4-pll-0.json").write_text(json.dumps(bad))
    result = mdlm_compare(base, better)
    assert result.returncode == 0, result.stderr
    assert "note: base: 1 unreadable report skipped (junk.json)" in result.stderr
    assert "do not match its results; no interval" in result.stderr


@pytest.mark.slow
def test_a_trained_run_against_its_copy(finished_smoke_run, tmp_path):
    """The metrics a real trainer writes: losses against tokens and time, no dev loss (dev_every=0)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_smoke_run, copy)
    result = mdlm_compare(finished_smoke_run, copy, "--plots", tmp_path / "plots", "--x", "tokens")
    assert result.returncode == 0, result.stderr
    assert "run (baseline)" in result.stdout and "copy" in result.stdout
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["loss.png", "loss.svg"]
    comparison = compare_runs(load_runs([finished_smoke_run], []))
    assert curves(comparison, "time")["loss"][0].xs[-1] > 0
    assert comparison.run("run").step == 8
