"""The BabyLM 2025 pipeline's other zero-shot tasks: entity tracking, the wug tests and reading."""

import json
import math
import re
import shutil

import pytest
import torch

from core.evaluate import evaluate, option_credit
from core.reading import MASKS, load_reading, r2_gain, reading_results, surprisals
from core.specials import BOS_ID, MASK_ID
from core.suites import Item, Suite, load_suite
from core.tokenizer import train_tokenizer
from core.zero_shot import first_option_probability, spearman
from tests.helpers import error_line, mdlm

SAMPLE = "evaluation_data/sample_eval"


class FixedScores:
    """A scorer whose score for each text is given: the answers are known by hand."""

    backend = "fixed"

    def __init__(self, table: dict[str, float]):
        self.table = table

    def score_texts(self, texts, contexts=None):
        return [self.table[text] for text in texts]


@pytest.fixture
def run_copy(finished_smoke_run, tmp_path):
    """Evaluations write reports into the run: work on a copy of the shared one, without the reports
    other tests' evaluations left in it."""
    run = shutil.copytree(finished_smoke_run, tmp_path / "run")
    shutil.rmtree(run / "eval", ignore_errors=True)
    return run


# ---------------------------------------------------------------- loading the official formats


def test_sample_files_load_in_the_pipelines_terms(shared_data):
    data = shared_data / SAMPLE
    tracking, wug, reading = load_suite("entity_tracking,wug_adj,reading", str(data))
    assert tracking.uids() == ["ambiref_0_ops", "move_contents_0_ops", "regular_0_ops"]  # <file>_<numops>_ops
    first = json.loads((data / "entity_tracking" / "ambiref.jsonl").read_text().splitlines()[0])
    item = tracking.items[0]
    assert item.field == "ambiref" and len(item.options) == 5 and item.texts() == item.options
    # scored as context + " " + option: the pipeline's input_prefix + option, exactly
    assert [item.context + " " + o for o in item.options] == [
        first["input_prefix"] + o for o in first["options"]
    ]
    assert wug.metric == "spearman" and wug.uids() == ["wug_adj"] and len(wug.items) == 40
    assert wug.items[0].good.endswith("actignability") and wug.items[0].ratio == pytest.approx(
        0.5454545454545454
    )
    assert reading.metric == "delta_r2" and len(reading.items) == 40  # sentences
    assert sum(len(s.words) for s in reading.items) == 371
    [limited] = load_suite("reading", str(data), limit=2)  # --limit counts sentences here
    assert len(limited.items) == 2 and limited.limit == 2


def test_all_includes_the_new_suites_where_present(shared_data):
    names = [suite.name for suite in load_suite("all", str(shared_data / SAMPLE), limit=1)]
    assert names == ["entity_tracking", "wug_adj", "reading"]
    # a folder or the reading file given by path is read in its own format too
    by_path = load_suite(
        f"{shared_data / SAMPLE / 'entity_tracking'},{shared_data / SAMPLE / 'reading' / 'reading_data.csv'}"
    )
    assert [(suite.name, suite.metric) for suite in by_path] == [
        ("entity_tracking", "accuracy"),
        ("reading", "delta_r2"),
    ]


def test_reading_file_without_its_columns_is_one_sentence(tmp_path):
    (tmp_path / "reading").mkdir()
    (tmp_path / "reading" / "reading_data.csv").write_text("item,word\nThe,cat\n")
    from core.errors import UserError

    with pytest.raises(UserError, match=r"not the BabyLM reading file: it has no column prev_item"):
        load_suite("reading", str(tmp_path))


# ---------------------------------------------------------------- entity tracking


def tracking_item(file: str, numops: int, name: str) -> Item:
    options = [f"{name} {k}" for k in range(5)]
    return Item(
        uid=f"{file}_{numops}_ops",
        field=file,
        term=None,
        good=options[0],
        bad=options[1],
        context="Box 1 contains",
        options=options,
    )


def test_entity_tracking_accuracy_per_subset_then_files():
    items = [
        tracking_item("regular", 0, "a"),
        tracking_item("regular", 0, "b"),
        tracking_item("regular", 1, "c"),
        tracking_item("ambiref", 0, "d"),
    ]
    scores = {f"{n} {k}": 0.0 for n in "abcd" for k in range(5)}
    scores.update(
        {"a 0": 1.0, "b 3": 1.0, "c 0": 5.0, "d 0": 2.0, "d 4": 2.0}
    )  # right, wrong, right, a two-way tie
    report = evaluate(FixedScores(scores), Suite("entity_tracking", items, "test", macro_by_field=True))
    accuracy = {uid: row["accuracy"] for uid, row in report.per_uid.items()}
    assert accuracy == {"regular_0_ops": 0.5, "regular_1_ops": 1.0, "ambiref_0_ops": 0.5}
    # the mean over numops within each file, then over the files (run.py), not over the three subsets
    assert report.per_field == {"ambiref": 0.5, "regular": 0.75}
    assert report.macro == pytest.approx(0.625)


def test_tied_options_share_the_credit():
    assert option_credit([1.0, 1.0, 1.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    assert option_credit([1.0, 2.0, 2.0]) == 0.0
    assert option_credit([3.0, 2.0]) == 1.0 and option_credit([2.0, 2.0]) == 0.5


# ---------------------------------------------------------------- wug


def test_wug_reports_spearman_of_the_first_forms_probability(tmp_path):
    # score differences 2, 0, -1, 1 against human ratios .9, .5, .1, .3: ranks 4 2 1 3 vs 4 3 1 2,
    # so rho = 1 - 6 * (0 + 1 + 0 + 1) / (4 * 15) = 0.8
    diffs, ratios = [2.0, 0.0, -1.0, 1.0], [0.9, 0.5, 0.1, 0.3]
    items = [
        Item(uid="wug_adj", field=None, term=None, good=f"w{i}ity", bad=f"w{i}ness", ratio=r)
        for i, r in enumerate(ratios)
    ]
    table = {**{f"w{i}ity": d for i, d in enumerate(diffs)}, **{f"w{i}ness": 0.0 for i in range(4)}}
    predictions = []
    report = evaluate(
        FixedScores(table), Suite("wug_adj", items, "test", metric="spearman"), predictions=predictions
    )
    assert report.metric == "spearman" and report.macro == pytest.approx(0.8)
    assert report.per_uid["wug_adj"]["accuracy"] == pytest.approx(0.8) and report.per_uid["wug_adj"]["n"] == 4
    # the pipeline's model ratio: softmax over the two scores, first entry
    assert predictions[0]["prob"] == pytest.approx(1 / (1 + math.exp(-2))) and predictions[0]["ratio"] == 0.9
    assert first_option_probability([0.0, 0.0]) == 0.5


def test_spearman_ranks_ties_by_their_mean():
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(
        0.9486832980505138
    )  # Pearson of 1,2.5,2.5,4 vs 1..4
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


# ---------------------------------------------------------------- reading


class UniformLogits(torch.nn.Module):
    """Equal logits everywhere: every token has p = 1 / (V - 1) once [MASK] leaves the softmax."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.calls = vocab, []

    def forward(self, input_ids, attention_mask=None, rate=None, output_mask=None):
        self.calls.append((input_ids.clone(), output_mask.clone(), rate.clone()))
        return torch.zeros(int(output_mask.sum()), self.vocab)


def test_surprisal_appends_three_masks_and_predicts_at_the_first():
    tokenizer = train_tokenizer(["Arthur placed the bars of chocolate on the counter."] * 20, 300)
    model = UniformLogits(300)
    context, word = "Arthur placed", "chocolate."
    ctx = tokenizer.encode(context, add_special_tokens=False).ids
    target = tokenizer.encode(" " + word, add_special_tokens=False).ids  # the word after its space
    [value] = surprisals(model, tokenizer, "cpu", [(context, word)], rate_value="realised")
    assert value == pytest.approx(len(target) * math.log(299))  # -ln p, one uniform token at a time
    rows = [row for ids, _, _ in model.calls for row in ids.tolist()]
    slots = [mask.nonzero()[0, 1].item() for _, masks, _ in model.calls for mask in masks.split(1)]
    for k in range(len(target)):  # the word's first k tokens join the context for its token k
        assert [BOS_ID] + ctx + target[:k] + [MASK_ID] * MASKS in rows
    assert all(row[slot] == MASK_ID and row[slot - 1] != MASK_ID for row, slot in zip(rows, slots))
    rates = [rate for _, _, r in model.calls for rate in r.tolist()]
    assert all(rate == pytest.approx(MASKS / (len(row) - 1)) for rate, row in zip(rates, rows))


def rows_for(y, pred, **extra):
    return [
        {
            "Subtlex_log10": 1.0,
            "length": 2.0,
            "context_length": 3.0,
            "prev_length": 4.0,
            "prev_pred": 5.0,
            "pred": p,
            **{
                m: v
                for m in ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound", "self_paced_reading_time")
            },
            **extra,
        }
        for v, p in zip(y, pred)
    ]


def test_r2_gain_over_the_baseline_is_the_share_left_explained():
    # Constant baseline predictors explain nothing (R^2 0); surprisal 1 3 2 4 against 1 2 3 4 has
    # r = 0.8, so the model's R^2 is 0.64 and so is the gain.
    rows = rows_for([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    for measure, result in reading_results(rows).items():
        assert result["accuracy"] == pytest.approx(0.64) and result["r2_baseline"] == pytest.approx(0.0)
        assert result["n"] == 4 and result["metric"] == "delta_r2"
    assert reading_results(rows)["self_paced_reading_time"]["field"] == "self_paced_reading"
    # a row missing a predictor leaves the fits, however wild its measure
    wild = rows + rows_for([1000.0], [0.0], Subtlex_log10=float("nan"))
    assert r2_gain(wild, "RTgopast", ("Subtlex_log10", "length", "context_length"))[
        "accuracy"
    ] == pytest.approx(0.64)
    # when surprisal only repeats a baseline predictor (here twice the length), nothing is gained
    same = rows_for([1.0, 3.0, 2.0, 5.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0])
    for row, length in zip(same, [1.0, 2.0, 3.0, 4.0, 5.0]):
        row["length"] = length
    result = r2_gain(same, "RTfirstfix", ("Subtlex_log10", "length", "context_length"))
    assert result["r2_baseline"] == pytest.approx(0.64) and result["accuracy"] == pytest.approx(0.0, abs=1e-9)


def test_reading_words_pair_with_the_previous_word(shared_data):
    suite = load_reading(shared_data / SAMPLE / "reading" / "reading_data.csv")
    first = suite.items[0].words
    assert (first[0].context, first[0].word) == ("Arthur placed", "the")
    assert (first[0].prev_context, first[0].prev_word) == ("Arthur", "placed")
    opening = [w for s in suite.items for w in s.words if w.values["context_length"] == 1]
    assert len(opening) == 40 and all(w.prev_context is None for w in opening)  # no previous word: left out


# ---------------------------------------------------------------- for real, through the command line


def test_cli_scores_the_sample_files(run_copy, shared_data, tmp_path):
    out = tmp_path / "reports.json"
    result = mdlm(
        "eval",
        run_copy,
        "--suite",
        "entity_tracking,wug_adj,reading",
        "--data",
        shared_data / SAMPLE,
        "--limit",
        4,
        "--device",
        "cpu",
        "--json",
        out,
        "--predictions",
        tmp_path / "p.jsonl",
    )
    assert result.returncode == 0, result.stderr
    tracking, wug, reading = json.loads(out.read_text())
    assert set(tracking["per_uid"]) == {"ambiref_0_ops", "move_contents_0_ops", "regular_0_ops"}
    assert tracking["n"] == 12 and tracking["macro"] == pytest.approx(sum(tracking["per_field"].values()) / 3)
    assert wug["metric"] == "spearman" and wug["per_uid"]["wug_adj"]["n"] == 4 and -1 <= wug["macro"] <= 1
    assert reading["metric"] == "delta_r2" and set(reading["per_field"]) == {
        "eye_tracking",
        "self_paced_reading",
    }
    [four] = load_suite("reading", str(shared_data / SAMPLE), limit=4)
    assert len(reading["per_uid"]) == 5 and reading["n"] == sum(len(s.words) for s in four.items)
    assert "Spearman rho" in result.stdout and "R^2 gain %" in result.stdout and "RTgopast" in result.stdout
    # without the UTC time each name ends in
    saved = sorted(
        re.sub(r"-\d{8}T\d{6}(-\d+)?(?=\.json$)", "", path.name)
        for path in (run_copy / "eval").glob("*.json")
    )
    assert saved == [
        "entity_tracking-step-8-pll-limit4.json",
        "reading-step-8-pll-limit4.json",
        "wug_adj-step-8-pll-limit4.json",
    ]
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert sum(r["suite"] == "entity_tracking" and len(r["scores"]) == 5 for r in records) == 12
    assert sum("surprisal" in r for r in records) == reading["n"]


def test_babylm_runs_every_task_present_with_one_summary(run_copy, shared_data, tmp_path):
    data = tmp_path / "evaluation_data"
    for name in ("blimp_filtered", "supplement_filtered"):  # two paradigms each, two pairs a paradigm
        for path in sorted((shared_data / "evaluation_data" / "full_eval" / name).glob("*.jsonl"))[:2]:
            (data / name).mkdir(parents=True, exist_ok=True)
            (data / name / path.name).write_text("".join(path.read_text().splitlines(True)[:2]))
    for name in ("entity_tracking", "wug_adj_nominalization", "reading"):
        shutil.copytree(shared_data / SAMPLE / name, data / name)
    result = mdlm("eval", run_copy, "--suite", "babylm", "--data", data, "--limit", 2, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "babylm: no data for ewok, wug_past" in result.stderr
    summary = result.stdout[result.stdout.index("BabyLM zero-shot summary") :]
    labels = ["BLiMP", "BLiMP supplement", "entity tracking", "wug adj", "reading (SPR)", "reading (ET)"]
    assert [summary.index(label) for label in labels] == sorted(summary.index(label) for label in labels)


@pytest.mark.parametrize(
    "suite, folder", [("reading", "reading/reading_data.csv"), ("entity_tracking", "entity_tracking/")]
)
def test_missing_data_is_one_sentence(run_copy, tmp_path, suite, folder):
    result = mdlm("eval", run_copy, "--suite", suite, "--data", tmp_path, "--device", "cpu")
    line = error_line(result)
    assert f"Suite '{suite}' not found: no {folder} under {tmp_path}" in line


def test_the_eval_screens_runner_reports_whole_suites(run_copy, shared_data):
    from mdlm_tui.eval.runner import EvalRequest, run_evaluation

    seen, done = [], []
    saved = run_evaluation(
        EvalRequest(run_copy, "wug_adj,entity_tracking", str(shared_data / SAMPLE), 3, device="cpu"),
        on_uid=lambda suite, uid, result: seen.append((suite, uid, result.get("metric"))),
        on_suite=lambda report, path: done.append(report),
    )
    assert seen[0] == ("wug_adj", "wug_adj", "spearman") and len(seen) == 4
    assert [report.metric for report in done] == ["spearman", "accuracy"] and len(saved) == 2
    assert done[1].macro == pytest.approx(sum(done[1].per_field.values()) / 3)


def test_the_eval_screen_names_what_a_saved_reports_numbers_are(run_copy):
    import asyncio

    from textual.app import App
    from textual.widgets import Static

    from mdlm_tui.eval.screen import EvalScreen
    from mdlm_tui.eval.table import EvalTable

    row = {"accuracy": 0.25, "n": 40, "field": None, "term": None, "metric": "spearman"}
    report = {
        "suite": "wug_adj",
        "per_uid": {"wug_adj": row},
        "per_field": {},
        "macro": 0.25,
        "n": 40,
        "seconds": 1.0,
        "backend": "pll",
        "checkpoint": "step-8",
        "limit": None,
        "weights": "ema",
        "rate_value": 0.0,
        "draws": None,
        "metric": "spearman",
    }
    (run_copy / "eval").mkdir(exist_ok=True)
    (run_copy / "eval" / "wug_adj-step-8-pll.json").write_text(json.dumps(report))

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(EvalScreen(run_copy))

    async def drive():
        app = Host()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            table = app.screen.query_one(EvalTable)
            assert str(table.get_cell("wug_adj/wug_adj", "uid")) == "wug_adj (rho)"
            assert table.get_cell("wug_adj/wug_adj", "now") == "25.0"
            assert "wug_adj rho 25.0" in str(app.screen.query_one("#eval-macro", Static).render())

    asyncio.run(drive())
