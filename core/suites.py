"""Zero-shot evaluation suites (SPEC section 6): minimal pairs, EWoK items, entity-tracking options and
wug pairs as one kind of Item; the reading suite's sentences are core.reading's.

Where a suite comes from:
    "blimp" | "supplement" | "ewok"   found under the BabyLM evaluation_data layout (full_eval/ or fast_eval/)
    "entity_tracking" | "wug_adj" | "wug_past" | "reading"
                                      the BabyLM 2025 pipeline's other zero-shot tasks, likewise
    "all"                             every one of those that is present
    "babylm"                          the same, saying which of the pipeline's tasks have no data
    "builtin"                         a small suite generated here from templates, so evaluation works offline
    path/to/file.jsonl, path/to/dir   any JSONL with sentence_good / sentence_bad, or EWoK rows
    "hf:<id>[:config][:split]"        a Hugging Face dataset (a hub id, or a local data file or folder)
Several specs may be joined with commas.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from core.errors import UserError

# The BabyLM 2025 pipeline's folder names, by the short name users type (its task names), in the order
# its eval_zero_shot.sh runs them.
LAYOUT_FOLDERS = {
    "blimp": "blimp_filtered",
    "supplement": "supplement_filtered",
    "ewok": "ewok_filtered",
    "entity_tracking": "entity_tracking",
    "wug_adj": "wug_adj_nominalization",
    "wug_past": "wug_past_tense",
    "reading": "reading",
}
# fast_eval names this one differently (eval_zero_shot_fast.sh)
FAST_FOLDERS = {"entity_tracking": "entity_tracking_fast"}
# Where under --data DIR those folders may sit: DIR itself (pointing at full_eval/ or fast_eval/), the
# two splits, or an evaluation_data/ folder one level down. full_eval comes first: it is the real score.
LAYOUT_ROOTS = ("", "full_eval", "fast_eval", "evaluation_data/full_eval", "evaluation_data/fast_eval")
SUITE_NAMES = ", ".join([*LAYOUT_FOLDERS, "all", "babylm", "builtin"])
EWOK_FIELDS = ("Context1", "Target1", "Target2")
PAIR_FIELDS = ("sentence_good", "sentence_bad")


@dataclass
class Item:
    """One scored comparison: right when `good` scores higher than `bad`."""

    uid: str
    field: str | None
    term: str | None
    good: str
    bad: str
    # EWoK: the scored text is context + " " + target, and only the target's tokens are summed.
    context: str | None = None
    # Entity tracking: every option after the context, the first correct (good and bad are the first two).
    options: list[str] | None = None
    ratio: float | None = None  # wug: the human preference for `good`, the first form

    def texts(self) -> list[str]:
        """What is scored, in order; the first is the right answer."""
        return self.options if self.options is not None else [self.good, self.bad]


@dataclass
class Suite:
    name: str
    items: list[Item]
    source: str  # the file, folder or dataset id, for the report
    skipped: int = 0  # items left out as longer than the model can score (see scoring.drop_long_items)
    limit: int | None = None  # items kept per UID, when that left some out (see load_suite)
    metric: str = "accuracy"  # accuracy | spearman (wug) | delta_r2 (reading): what per-UID numbers mean
    macro_by_field: bool = False  # macro = mean of the per-field means (entity tracking: of its files)

    def uids(self) -> list[str]:
        return list(dict.fromkeys(item.uid for item in self.items))


# ---------------------------------------------------------------- one record -> one Item


class BadRecord(ValueError):
    """A record that cannot become an Item; the message says why, without the location."""


def normalise_field(field) -> str | None:
    # BLiMP spells one field two ways; the filtered files use both.
    if field is None:
        return None
    return "syntax/semantics" if field == "syntax_semantics" else str(field)


def _text(record: dict, key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise BadRecord(f"'{key}' is {got}, not text")
    return value


def record_to_item(record, default_uid: str) -> Item:
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, got a {type(record).__name__}")
    if all(key in record for key in PAIR_FIELDS):
        return Item(
            uid=str(record.get("UID") or default_uid),
            field=normalise_field(record.get("field")),
            term=record.get("linguistics_term"),
            good=_text(record, "sentence_good"),
            bad=_text(record, "sentence_bad"),
        )
    if all(key in record for key in EWOK_FIELDS):
        # The filtered files hold each item twice with the contexts swapped; each row is scored on
        # its own Context1, so the swapped copy asks the same question of the other context.
        # No field or term: ContextType and ContextDiff vary within a domain, so they would
        # mislabel the UID.
        return Item(
            uid=str(record.get("Domain") or default_uid),
            field=None,
            term=None,
            good=_text(record, "Target1"),
            bad=_text(record, "Target2"),
            context=_text(record, "Context1"),
        )
    raise BadRecord("has neither sentence_good/sentence_bad nor Context1/Target1/Target2")


def _collect(
    records: Iterable[tuple[str, object]],
    default_uid: str,
    on_bad_line: str,
    warn: Callable[[str], None],
    convert: Callable[[object, str], Item] = record_to_item,
) -> list[Item]:
    """Items from (location, record or exception) pairs, refusing or skipping the bad ones."""
    items = []
    for where, record in records:
        try:
            if isinstance(record, Exception):
                raise BadRecord(str(record))
            items.append(convert(record, default_uid))
        except BadRecord as e:
            if on_bad_line == "skip":
                warn(f"warning: {where}: {e}; line skipped")
                continue
            raise UserError(f"{where}: {e} (pass --on-bad-line skip to skip such lines).") from None
    return items


def _jsonl_records(path: Path) -> Iterable[tuple[str, object]]:
    try:
        handle = open(path, encoding="utf-8-sig")  # a byte-order mark, as some editors write, is no record
    except OSError as e:
        raise UserError(f"Cannot read {path}: {e.strerror}.") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{number}", json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"{path}:{number}", ValueError(f"not valid JSON ({e.msg} at column {e.colno})")
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text.") from None


def _check_mode(on_bad_line: str) -> None:
    if on_bad_line not in ("refuse", "skip"):
        raise UserError(f"on_bad_line must be 'refuse' or 'skip', got '{on_bad_line}'.")


def read_jsonl_items(
    path: Path, on_bad_line: str = "refuse", warn: Callable[[str], None] = print
) -> list[Item]:
    """A JSONL file's items; UID from each record, else the file stem (the BLiMP supplement's rule)."""
    path = Path(path)
    items = _collect(_jsonl_records(path), path.stem, on_bad_line, warn)
    if not items:
        raise UserError(
            f"{path} holds no items: expected JSON lines with sentence_good and sentence_bad, or EWoK rows."
        )
    return items


# ---------------------------------------------------------------- where suites live


def limit_per_uid(items: list[Item], limit: int | None) -> list[Item]:
    """The first `limit` items of each UID, in file order: deterministic, so runs compare."""
    if limit is None:
        return items
    if limit <= 0:
        raise UserError(f"The item limit must be positive, got {limit}.")
    seen: dict[str, int] = {}
    kept = []
    for item in items:
        if seen.get(item.uid, 0) < limit:
            seen[item.uid] = seen.get(item.uid, 0) + 1
            kept.append(item)
    return kept


def find_layout_folder(name: str, data_dir: str | None) -> Path | None:
    root = Path(data_dir or ".").expanduser()
    for sub in LAYOUT_ROOTS:
        for folder in (LAYOUT_FOLDERS[name], FAST_FOLDERS.get(name)):
            candidate = root / sub / folder if folder else None
            # "reading" is a common folder name: only one holding the pipeline's file counts
            if (
                candidate
                and candidate.is_dir()
                and (name != "reading" or (candidate / "reading_data.csv").is_file())
            ):
                return candidate
    return None


def _load_layout(name: str, folder: Path, on_bad_line: str, warn: Callable[[str], None]) -> Suite:
    """A pipeline task's suite from its folder; each format has its own reader."""
    from core.reading import load_reading
    from core.zero_shot import load_entity_tracking, load_wug

    if name == "reading":
        return load_reading(folder / "reading_data.csv", on_bad_line, warn)
    if name == "entity_tracking":
        return load_entity_tracking(folder, on_bad_line, warn)
    if name in ("wug_adj", "wug_past"):
        return load_wug(folder, name, on_bad_line, warn)
    return load_folder(folder, name, on_bad_line, warn)


def _layout_name(folder: Path) -> str | None:
    """The task a folder given by path holds, by the pipeline's folder names."""
    names = {**{v: k for k, v in LAYOUT_FOLDERS.items()}, **{v: k for k, v in FAST_FOLDERS.items()}}
    return names.get(folder.name)


def load_folder(folder: Path, name: str, on_bad_line: str, warn: Callable[[str], None]) -> Suite:
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise UserError(f"{folder} holds no .jsonl files.")
    items = [item for path in files for item in read_jsonl_items(path, on_bad_line, warn)]
    return Suite(name=name, items=items, source=str(folder))


def _suite_name(folder: Path) -> str:
    return folder.name.removesuffix("_filtered")


def _load_one(spec: str, data_dir: str | None, on_bad_line: str, warn: Callable[[str], None]) -> list[Suite]:
    if spec == "builtin":
        return [builtin_suite()]
    if spec.startswith("hf:"):
        return [load_hf_suite(spec, on_bad_line, warn)]
    if spec in LAYOUT_FOLDERS:
        folder = find_layout_folder(spec, data_dir)
        if folder is None:
            where = Path(data_dir or ".").expanduser()
            wanted = "reading/reading_data.csv" if spec == "reading" else f"{LAYOUT_FOLDERS[spec]}/"
            raise UserError(
                f"Suite '{spec}' not found: no {wanted} under {where}, its full_eval/ or "
                "fast_eval/ (or evaluation_data/); pass --data pointing at the BabyLM evaluation_data "
                "folder."
            )
        return [_load_layout(spec, folder, on_bad_line, warn)]
    if spec in ("all", "babylm"):
        found = [name for name in LAYOUT_FOLDERS if find_layout_folder(name, data_dir) is not None]
        if not found:
            raise UserError(
                f"No evaluation suites ({', '.join(LAYOUT_FOLDERS.values())}) under {Path(data_dir or '.')}: "
                "pass --data pointing at the BabyLM evaluation_data folder, or use the builtin suite."
            )
        missing = [name for name in LAYOUT_FOLDERS if name not in found]
        if spec == "babylm" and missing:  # a submission reports every task: say which are left out
            warn(f"warning: babylm: no data for {', '.join(missing)} under {Path(data_dir or '.')}; left out")
        return [suite for name in found for suite in _load_one(name, data_dir, on_bad_line, warn)]
    path = Path(spec).expanduser()
    if path.is_file() and path.name == "reading_data.csv":
        return [_load_layout("reading", path.parent, on_bad_line, warn)]
    if path.is_file():
        return [Suite(name=path.stem, items=read_jsonl_items(path, on_bad_line, warn), source=str(path))]
    if path.is_dir() and _layout_name(path) not in (None, "blimp", "supplement", "ewok"):
        return [_load_layout(_layout_name(path), path, on_bad_line, warn)]
    if path.is_dir():
        return [load_folder(path, _suite_name(path), on_bad_line, warn)]
    raise UserError(
        f"Unknown suite '{spec}': use {SUITE_NAMES}, a .jsonl file or folder, or hf:<dataset id>."
    )


def load_suite(
    spec: str,
    data_dir: str | None = None,
    limit: int | None = None,
    on_bad_line: str = "refuse",
    warn: Callable[[str], None] = print,
) -> list[Suite]:
    _check_mode(on_bad_line)
    parts = (
        [part.strip() for part in str(spec).split(",") if part.strip()]
        if not str(spec).startswith("hf:")
        else [spec]
    )
    if not parts:
        raise UserError(f"No suite given: use {SUITE_NAMES}, a .jsonl file or folder, or hf:<dataset id>.")
    suites = [suite for part in parts for suite in _load_one(part, data_dir, on_bad_line, warn)]
    for suite in suites:
        kept = limit_per_uid(suite.items, limit)
        # A limit that left nothing out scores the whole suite: its report compares with unlimited ones.
        suite.limit = limit if len(kept) < len(suite.items) else None
        suite.items = kept
    return suites


# ---------------------------------------------------------------- Hugging Face datasets


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """'hf:nyu-mll/blimp:adjunct_island:train' -> (id, config, split); split defaults to train."""
    parts = spec[3:].split(":")
    if not parts[0] or len(parts) > 3:
        raise UserError(
            f"'{spec}' must look like hf:<dataset id>[:config][:split], for example "
            "hf:nyu-mll/blimp:adjunct_island."
        )
    name = parts[0]
    config = (parts[1] or None) if len(parts) > 1 else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return name, config, split


@contextlib.contextmanager
def _quiet_hub():
    """The hub libraries log warnings and HTTP retries to the terminal; a failed load should end in
    our one sentence alone. Progress bars stay off: this process never wants them."""
    import datasets
    from huggingface_hub import utils as hub_utils

    datasets.disable_progress_bars()
    hub_utils.disable_progress_bars()
    loggers = [logging.getLogger(name) for name in ("datasets", "huggingface_hub", "fsspec", "urllib3")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _hf_rows(name: str, config: str | None, split: str):
    import datasets  # slow to import; only this source needs it

    from core.config import DataConfig
    from core.corpus import cache_root

    where = Path(name).expanduser()
    try:
        with _quiet_hub():
            if where.is_file():
                # A local data file; "json" reads .json and .jsonl alike.
                builder = (
                    "csv" if where.suffix == ".csv" else "parquet" if where.suffix == ".parquet" else "json"
                )
                return datasets.load_dataset(
                    builder,
                    data_files=str(where),
                    split=split,
                    cache_dir=str(cache_root(DataConfig()) / "hf-datasets"),
                )
            return datasets.load_dataset(name, config, split=split)
    except Exception as e:  # network, authentication, unknown id, config or split: all the user's to fix
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(
            f"Cannot load Hugging Face dataset '{name}' (config {config}, split {split}): {reason}."
        ) from None


def load_hf_suite(spec: str, on_bad_line: str = "refuse", warn: Callable[[str], None] = print) -> Suite:
    name, config, split = parse_hf_spec(spec)
    rows = _hf_rows(name, config, split)
    default_uid = config or Path(name).stem
    records = ((f"{spec} row {index}", row) for index, row in enumerate(rows))
    items = _collect(records, default_uid, on_bad_line, warn)
    if not items:
        raise UserError(
            f"{spec} holds no items: expected rows with sentence_good and sentence_bad, or EWoK rows."
        )
    return Suite(name=config or Path(name).stem, items=items, source=spec)


# ---------------------------------------------------------------- builtin
# Templates over everyday words that also occur in the embedded King James Bible, so a model trained
# on the default corpus has seen them. Each phenomenon is a full product of small word lists, thinned
# by a fixed-seed sample to BUILTIN_PER_UID pairs: deterministic, and spread over the words.

BUILTIN_PER_UID = 60
REGULAR_NOUNS = [
    "king",
    "servant",
    "prophet",
    "priest",
    "brother",
    "daughter",
    "son",
    "shepherd",
    "stranger",
    "widow",
    "elder",
    "captain",
]
PLACES = ["in the city", "at the gate", "in the house", "by the river", "in the field", "on the mountain"]
ATTRACTORS = {"singular": ["king", "priest", "city"], "plural": ["kings", "priests", "cities"]}
MALE = ["king", "man", "prophet", "priest", "son", "brother", "father"]
FEMALE = ["queen", "woman", "daughter", "sister", "mother", "widow"]
PLURAL = ["kings", "men", "women", "sons", "daughters", "servants", "people"]
REFLEXIVE_VERBS = ["hid", "washed", "humbled", "saw", "blessed", "praised"]
DETERMINERS = {"singular": ["this", "that"], "plural": ["these", "those"]}
DET_SUBJECTS = ["The people", "He", "She", "They"]
DET_VERBS = ["saw", "blessed", "called", "found", "sent", "heard"]
IRREGULAR_PAST = [
    ("went", "goed", "to the city"),
    ("came", "comed", "to the house"),
    ("took", "taked", "the bread"),
    ("gave", "gived", "the bread to them"),
    ("ate", "eated", "the bread"),
    ("knew", "knowed", "the way"),
    ("found", "finded", "the sheep"),
    ("brought", "bringed", "the gold"),
    ("told", "telled", "the people"),
    ("sent", "sended", "a letter"),
    ("stood", "standed", "at the gate"),
    ("made", "maked", "a feast"),
]
PAST_SUBJECTS = ["The king", "The woman", "The servants", "He", "They"]
IRREGULAR_PLURALS = [
    ("children", "childs"),
    ("men", "mans"),
    ("women", "womans"),
    ("feet", "foots"),
    ("oxen", "oxes"),
    ("sheep", "sheeps"),
    ("mice", "mouses"),
    ("geese", "gooses"),
    ("teeth", "tooths"),
]
PLURAL_FRAMES = [
    "The {} were in the field.",
    "All the {} went out.",
    "I saw the {}.",
    "Many {} came to the city.",
    "The {} are here.",
    "He counted the {}.",
    "She found the {} at the gate.",
    "There were many {}.",
]


def _plural(noun: str) -> str:
    return noun[:-1] + "ies" if noun.endswith("y") else noun + "s"


def _thin(pairs: list[tuple[str, str]], per_uid: int = BUILTIN_PER_UID) -> list[tuple[str, str]]:
    """A fixed-seed sample in generation order. A plain stride would line up with the nested loops
    and keep, say, only singular subjects."""
    if len(pairs) <= per_uid:
        return pairs
    keep = sorted(random.Random(0).sample(range(len(pairs)), per_uid))
    return [pairs[i] for i in keep]


def _subject_verb_pairs() -> list[tuple[str, str]]:
    pairs = []
    for noun in REGULAR_NOUNS:
        for place in PLACES:
            for singular, plural in (("is", "are"), ("was", "were")):
                pairs.append((f"The {noun} {singular} {place}.", f"The {noun} {plural} {place}."))
                pairs.append(
                    (f"The {_plural(noun)} {plural} {place}.", f"The {_plural(noun)} {singular} {place}.")
                )
    return pairs


def _attractor_pairs() -> list[tuple[str, str]]:
    # The noun next to the verb has the other number: agreement has to skip over it.
    pairs = []
    for noun in REGULAR_NOUNS:
        for place in PLACES:
            for singular, plural in (("is", "are"), ("was", "were")):
                for other in ATTRACTORS["plural"]:
                    pairs.append(
                        (
                            f"The {noun} of the {other} {singular} {place}.",
                            f"The {noun} of the {other} {plural} {place}.",
                        )
                    )
                for other in ATTRACTORS["singular"]:
                    subject = f"The {_plural(noun)} of the {other}"
                    pairs.append((f"{subject} {plural} {place}.", f"{subject} {singular} {place}."))
    return pairs


def _determiner_pairs() -> list[tuple[str, str]]:
    pairs = []
    for subject in DET_SUBJECTS:
        for verb in DET_VERBS:
            for noun in REGULAR_NOUNS:
                for det in DETERMINERS["singular"]:
                    pairs.append(
                        (f"{subject} {verb} {det} {noun}.", f"{subject} {verb} {det} {_plural(noun)}.")
                    )
                for det in DETERMINERS["plural"]:
                    pairs.append(
                        (f"{subject} {verb} {det} {_plural(noun)}.", f"{subject} {verb} {det} {noun}.")
                    )
    return pairs


def _anaphor_gender_pairs() -> list[tuple[str, str]]:
    pairs = []
    for verb in REFLEXIVE_VERBS:
        pairs += [(f"The {noun} {verb} himself.", f"The {noun} {verb} herself.") for noun in MALE]
        pairs += [(f"The {noun} {verb} herself.", f"The {noun} {verb} himself.") for noun in FEMALE]
    return pairs


def _anaphor_number_pairs() -> list[tuple[str, str]]:
    pairs = []
    for verb in REFLEXIVE_VERBS:
        pairs += [(f"The {noun} {verb} themselves.", f"The {noun} {verb} himself.") for noun in PLURAL]
        pairs += [(f"The {noun} {verb} himself.", f"The {noun} {verb} themselves.") for noun in MALE]
    return pairs


def _irregular_past_pairs() -> list[tuple[str, str]]:
    return [
        (f"{subject} {good} {rest}.", f"{subject} {bad} {rest}.")
        for good, bad, rest in IRREGULAR_PAST
        for subject in PAST_SUBJECTS
    ]


def _irregular_plural_pairs() -> list[tuple[str, str]]:
    return [
        (frame.format(good), frame.format(bad)) for good, bad in IRREGULAR_PLURALS for frame in PLURAL_FRAMES
    ]


BUILTIN_PHENOMENA = [
    # uid, field, linguistics term, generator
    ("subject_verb_agreement", "morphology", "subject_verb_agreement", _subject_verb_pairs),
    ("agreement_with_attractor", "morphology", "subject_verb_agreement", _attractor_pairs),
    ("determiner_noun_agreement", "morphology", "determiner_noun_agreement", _determiner_pairs),
    ("anaphor_gender_agreement", "morphology", "anaphor_agreement", _anaphor_gender_pairs),
    ("anaphor_number_agreement", "morphology", "anaphor_agreement", _anaphor_number_pairs),
    ("irregular_past_tense", "morphology", "irregular_forms", _irregular_past_pairs),
    ("irregular_plural_nouns", "morphology", "irregular_forms", _irregular_plural_pairs),
]


def builtin_suite() -> Suite:
    """A few hundred template-generated minimal pairs, so a run can be evaluated with no data at all."""
    items = [
        Item(uid=uid, field=field, term=term, good=good, bad=bad)
        for uid, field, term, generate in BUILTIN_PHENOMENA
        for good, bad in _thin(generate())
    ]
    return Suite(name="builtin", items=items, source="builtin templates (core/suites.py)")
