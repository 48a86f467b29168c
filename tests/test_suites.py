import json
from pathlib import Path

import pytest

from core.errors import UserError
from core.suites import builtin_suite, load_suite

EWOK_ROWS = [
    {
        "Domain": "spatial-relations",
        "MetaTemplateID": 1,
        "TemplateID": "1_1",
        "ConceptA": "cup",
        "ConceptB": "box",
        "Context1": "The cup is inside the box.",
        "Context2": "The box is inside the cup.",
        "Target1": "The cup is smaller.",
        "Target2": "The box is smaller.",
        "ContextType": "concrete",
        "ContextDiff": "variable swap",
        "TargetDiff": "concept swap",
    },
    {
        "Domain": "spatial-relations",
        "MetaTemplateID": 1,
        "TemplateID": "1_1",
        "ConceptA": "cup",
        "ConceptB": "box",
        "Context1": "The box is inside the cup.",
        "Context2": "The cup is inside the box.",
        "Target1": "The box is smaller.",
        "Target2": "The cup is smaller.",
        "ContextType": "concrete",
        "ContextDiff": "variable swap",
        "TargetDiff": "concept swap",
    },
    {
        "Domain": "social-properties",
        "MetaTemplateID": 2,
        "TemplateID": "2_1",
        "ConceptA": "kind",
        "ConceptB": "rude",
        "Context1": "Ana is kind.",
        "Context2": "Ana is rude.",
        "Target1": "Ana helps people.",
        "Target2": "Ana insults people.",
        "ContextType": "concrete",
        "ContextDiff": "property swap",
        "TargetDiff": "property swap",
    },
]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def pair(good="The cat sleeps.", bad="The cat sleep.", **extra):
    return {"sentence_good": good, "sentence_bad": bad, **extra}


# ---------------------------------------------------------------- the shared BabyLM files


def test_blimp_loads_with_uids_and_normalised_fields(shared_data):
    [suite] = load_suite("blimp", data_dir=str(shared_data / "evaluation_data"))
    folder = shared_data / "evaluation_data" / "full_eval" / "blimp_filtered"
    assert suite.name == "blimp" and suite.source == str(folder)
    assert len(suite.items) == 59_875
    assert sorted(suite.uids()) == sorted(p.stem for p in folder.glob("*.jsonl"))
    fields = {item.field for item in suite.items}
    assert fields == {"morphology", "semantics", "syntax", "syntax/semantics"}  # syntax_semantics folded in
    first = json.loads((folder / "adjunct_island.jsonl").open().readline())
    item = next(i for i in suite.items if i.uid == "adjunct_island")
    assert (item.good, item.bad, item.term, item.context) == (
        first["sentence_good"],
        first["sentence_bad"],
        "island_effects",
        None,
    )


def test_supplement_uses_file_stems_and_keeps_dialogue_newlines(shared_data):
    [suite] = load_suite("supplement", data_dir=str(shared_data))  # found two levels down
    assert sorted(suite.uids()) == [
        "hypernym",
        "qa_congruence_easy",
        "qa_congruence_tricky",
        "subject_aux_inversion",
        "turn_taking",
    ]
    assert len(suite.items) == 5_218
    dialogue = [i for i in suite.items if i.uid == "qa_congruence_easy"]
    assert len(dialogue) == 64 and all("\n" in i.good and "\n" in i.bad for i in dialogue)
    assert sum("\n" in i.good for i in suite.items) == 64 + 165 + 244
    assert (
        next(i for i in suite.items if i.uid == "turn_taking").good
        == "David: Should you quit?\nSarah: No, I shouldn't."
    )


def test_limit_keeps_the_first_items_of_every_uid(shared_data):
    folder = shared_data / "evaluation_data" / "full_eval"
    [suite] = load_suite("blimp", data_dir=str(folder), limit=3)  # --data pointing at full_eval itself
    assert len(suite.items) == 67 * 3
    lines = (folder / "blimp_filtered" / "wh_island.jsonl").read_text().splitlines()[:3]
    assert [i.good for i in suite.items if i.uid == "wh_island"] == [
        json.loads(line)["sentence_good"] for line in lines
    ]


def test_all_finds_every_present_suite(shared_data):
    suites = load_suite("all", data_dir=str(shared_data), limit=1)
    assert [s.name for s in suites] == ["blimp", "supplement"]  # no ewok_filtered in the shared data


# ---------------------------------------------------------------- layout discovery


def test_fast_eval_is_found_and_full_eval_preferred(tmp_path):
    write_jsonl(
        tmp_path / "evaluation_data" / "fast_eval" / "blimp_filtered" / "a.jsonl", [pair(UID="fast_uid")]
    )
    [suite] = load_suite("blimp", data_dir=str(tmp_path))
    assert suite.uids() == ["fast_uid"]
    write_jsonl(
        tmp_path / "evaluation_data" / "full_eval" / "blimp_filtered" / "a.jsonl", [pair(UID="full_uid")]
    )
    assert load_suite("blimp", data_dir=str(tmp_path))[0].uids() == ["full_uid"]
    fast = tmp_path / "evaluation_data" / "fast_eval"
    assert load_suite("blimp", data_dir=str(fast))[0].uids() == ["fast_uid"]


def test_ewok_rows_score_targets_after_context1(tmp_path):
    write_jsonl(tmp_path / "full_eval" / "ewok_filtered" / "ewok.jsonl", EWOK_ROWS)
    [suite] = load_suite("ewok", data_dir=str(tmp_path))
    assert suite.name == "ewok" and len(suite.items) == 3
    assert suite.uids() == ["spatial-relations", "social-properties"]  # UID = Domain
    first, swapped = suite.items[:2]
    assert (first.context, first.good, first.bad) == (
        "The cup is inside the box.",
        "The cup is smaller.",
        "The box is smaller.",
    )
    assert (swapped.context, swapped.good, swapped.bad) == (
        "The box is inside the cup.",
        "The box is smaller.",
        "The cup is smaller.",
    )
    assert first.field is None and first.term is None


def test_a_single_file_and_a_folder_are_suites(tmp_path):
    path = write_jsonl(tmp_path / "mine" / "agreement.jsonl", [pair(), pair("Dogs bark.", "Dogs barks.")])
    write_jsonl(tmp_path / "mine" / "other.jsonl", [pair(field="syntax_semantics", linguistics_term="x")])
    [single] = load_suite(str(path))
    assert single.name == "agreement" and single.uids() == ["agreement"] and len(single.items) == 2
    [folder] = load_suite(str(tmp_path / "mine"))
    assert folder.uids() == ["agreement", "other"] and folder.items[-1].field == "syntax/semantics"
    assert [s.name for s in load_suite(f"{path},builtin")] == ["agreement", "builtin"]


def test_hf_spec_reads_a_local_jsonl_file(tmp_path):
    path = write_jsonl(
        tmp_path / "pairs.jsonl", [pair(UID="u1", field="syntax"), pair("A b.", "B a.", UID="u2")]
    )
    [suite] = load_suite(f"hf:{path}")
    assert suite.source == f"hf:{path}"
    assert suite.uids() == ["u1", "u2"] and suite.items[1].good == "A b." and suite.items[0].field == "syntax"
    write_jsonl(path, [pair(UID="u1"), pair("A b.", "B a.", UID="u1")])
    [suite] = load_suite(f"hf:{path}:", limit=1)  # an empty config is allowed
    assert len(suite.items) == 1


# ---------------------------------------------------------------- bad input


def malformed_file(tmp_path) -> Path:
    return write_jsonl(
        tmp_path / "bad.jsonl",
        [pair(), pair("One.", "Two."), "{not json", pair(), {"sentence_good": "only good"}],
    )


def test_malformed_line_is_refused_with_file_and_line(tmp_path):
    path = malformed_file(tmp_path)
    with pytest.raises(UserError, match=rf"{path}:3: not valid JSON"):
        load_suite(str(path))


def test_malformed_lines_are_skipped_with_a_warning(tmp_path):
    path = malformed_file(tmp_path)
    warnings = []
    [suite] = load_suite(str(path), on_bad_line="skip", warn=warnings.append)
    assert len(suite.items) == 3
    assert len(warnings) == 2 and f"{path}:3:" in warnings[0] and f"{path}:5:" in warnings[1]
    assert "sentence_bad" in warnings[1]


@pytest.mark.parametrize("record", [[1, 2], {"sentence_good": 3, "sentence_bad": "x"}, {"text": "hello"}])
def test_records_of_the_wrong_shape_are_refused(tmp_path, record):
    path = write_jsonl(tmp_path / "odd.jsonl", [pair(), record])
    with pytest.raises(UserError, match=rf"{path}:2: "):
        load_suite(str(path))


def test_missing_and_empty_suites_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="Suite 'blimp' not found"):
        load_suite("blimp", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="Unknown suite"):
        load_suite(str(tmp_path / "nothing.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="holds no items"):
        load_suite(str(empty))
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="no .jsonl files"):
        load_suite(str(tmp_path / "folder"))
    with pytest.raises(UserError, match="No evaluation suites"):
        load_suite("all", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="on_bad_line"):
        load_suite("builtin", on_bad_line="ignore")
    with pytest.raises(UserError, match="positive"):
        load_suite("builtin", limit=0)


def test_messages_are_one_sentence(tmp_path):
    for spec in ("blimp", str(tmp_path / "x.jsonl")):
        with pytest.raises(UserError) as caught:
            load_suite(spec, data_dir=str(tmp_path))
        message = str(caught.value)
        assert "\n" not in message and message.endswith(".")


def test_hf_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="hf:<dataset id>"):
        load_suite("hf:")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError):
        load_suite(f"hf:{empty}")


# ---------------------------------------------------------------- builtin


def test_builtin_suite_has_a_few_hundred_distinct_pairs():
    suite = builtin_suite()
    assert 200 <= len(suite.items) <= 1000
    uids = suite.uids()
    assert len(uids) >= 3
    assert {"subject_verb_agreement", "anaphor_gender_agreement", "irregular_past_tense"} <= set(uids)
    assert all(item.good != item.bad for item in suite.items)
    assert all(item.good and item.bad and item.context is None for item in suite.items)
    assert len({(i.good, i.bad) for i in suite.items}) == len(suite.items)
    assert all(sum(i.uid == uid for i in suite.items) >= 20 for uid in uids)


def test_builtin_suite_is_deterministic():
    first, second = builtin_suite(), builtin_suite()
    assert first.items == second.items
    assert load_suite("builtin", limit=5)[0].items == [
        i for i in first.items if sum(j.uid == i.uid for j in first.items[: first.items.index(i) + 1]) <= 5
    ]


def test_a_limit_is_recorded_where_it_leaves_items_out():
    # builtin holds 60 items a UID: a limit of 100 scores them all, so its numbers are the full suite's
    recorded = {
        limit: getattr(load_suite("builtin", limit=limit)[0], "limit", "not recorded")
        for limit in (None, 100, 20)
    }
    assert recorded == {None: None, 100: None, 20: 20}
