"""`mdlm-tui eval --predictions`: one JSON line per scored item, consistent with the printed accuracy."""

import json

import pytest

from core.evaluate import evaluate
from core.importer import import_released
from core.suites import Item, Suite
from tests.helpers import mdlm
from tests.test_import import write_released

PAIRS = [
    {"UID": uid, "sentence_good": good, "sentence_bad": bad}
    for uid, good, bad in [
        ("agreement", "The king was in the city.", "The king were in the city."),
        ("agreement", "The kings were at the gate.", "The kings was at the gate."),
        ("agreement", "The people were here.", "The people was here."),
        ("same", "They saw the bread.", "They saw the bread."),  # a tie
        ("past", "He went to the house.", "He goed to the house."),
        ("past", "She came to the city.", "She comed to the city."),
    ]
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    step, _, _ = write_released(tmp_path_factory.mktemp("released") / "model")
    target = tmp_path_factory.mktemp("runs") / "model"
    import_released(str(step), target)
    return target


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS))
    return path


def test_credit_per_item_averages_to_the_reported_accuracy(run_dir, suite_file, tmp_path):
    out, report_path = tmp_path / "predictions.jsonl", tmp_path / "report.json"
    result = mdlm(
        "eval", run_dir, "--suite", suite_file, "--predictions", out, "--json", report_path, "--device", "cpu"
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    report = json.loads(report_path.read_text())
    assert [(r["uid"], r["index"]) for r in records] == [
        ("agreement", 0),
        ("agreement", 1),
        ("agreement", 2),
        ("same", 0),
        ("past", 0),
        ("past", 1),
    ]
    assert all(r["suite"] == "pairs" for r in records)
    for uid, row in report["per_uid"].items():
        credits = [r["credit"] for r in records if r["uid"] == uid]
        assert len(credits) == row["n"] and sum(credits) / len(credits) == pytest.approx(row["accuracy"])
    assert sum(row["accuracy"] for row in report["per_uid"].values()) / 3 == pytest.approx(report["macro"])
    tie = records[3]
    assert tie["scores"][0] == pytest.approx(tie["scores"][1]) and tie["credit"] == 0.5 and tie["chosen"] == 0
    for r in records[:3] + records[4:]:
        good, bad = r["scores"]
        assert r["credit"] == (1.0 if good > bad else 0.0) and r["chosen"] == (0 if good > bad else 1)


def test_unwritable_predictions_file_is_one_sentence_after_the_results(run_dir, suite_file, tmpfs):
    full = tmpfs("64k")
    with pytest.raises(OSError), open(full / "filler", "wb") as filler:  # until the disk is full
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()
    result = mdlm("eval", run_dir, "--suite", suite_file, "--predictions", full / "p.jsonl")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "macro average" in result.stdout, "the results come first"
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("report: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "p.jsonl" in lines[0], result.stderr
    assert not [p.name for p in full.iterdir() if p.name != "filler"], "no half-written file is left"


def test_predictions_into_a_missing_folder_are_refused_before_scoring(run_dir, suite_file, tmp_path):
    target = tmp_path / "missing" / "p.jsonl"
    result = mdlm("eval", run_dir, "--suite", suite_file, "--predictions", target)
    assert result.returncode == 2 and "macro average" not in result.stdout
    assert f"the folder {target.parent} does not exist" in result.stderr


class FixedScorer:
    """Scores by a table, so that ties and near-ties are exact."""

    backend = "fixed"

    def __init__(self, table: dict[str, float]):
        self.table = table

    def score_texts(self, texts, contexts=None):
        return [self.table[text] for text in texts]


def test_records_follow_the_tie_rule():
    items = [
        Item("u", None, None, "a", "b"),
        Item("u", None, None, "c", "d"),
        Item("v", None, None, "e", "f"),
    ]
    # a beats b; c and d differ by less than the tie tolerance; f beats e
    scorer = FixedScorer({"a": -1.0, "b": -2.0, "c": -10.0, "d": -10.0 - 1e-9, "e": -3.0, "f": -1.0})
    records: list[dict] = []
    report = evaluate(scorer, Suite("toy", items, "test"), predictions=records)
    assert [(r["uid"], r["index"], r["credit"], r["chosen"]) for r in records] == [
        ("u", 0, 1.0, 0),
        ("u", 1, 0.5, 0),
        ("v", 0, 0.0, 1),
    ]
    assert records[0]["scores"] == [-1.0, -2.0] and records[0]["suite"] == "toy"
    assert report.per_uid["u"]["accuracy"] == 0.75 and report.per_uid["v"]["accuracy"] == 0.0
    assert evaluate(scorer, Suite("toy", items, "test")).per_uid == report.per_uid, "records change no result"
