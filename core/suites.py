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

Each of those is a registered suite kind (SuiteKind, in SUITES): a named kind loads the spec equal to
its name, a pattern kind (hf:, a reading_data.csv file, a .jsonl file, a folder) any spec it matches,
tried after the names in registration order. A user's module adds a suite with `register_suite`:

    @register_suite("tiny-pairs")
    def tiny_pairs(spec: str, request: SuiteRequest) -> Suite: ...

The shared types (Item, Suite, BadRecord) and the JSONL helpers live in core.suite_types, which the
loaders of core.zero_shot and core.reading import; they stay importable from here.
"""

from __future__ import annotations

import contextlib
import logging
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

from core.errors import UserError
from core.registry import Registry
from core.suite_types import (  # noqa: F401  (re-exported: the old home of these names)
    EWOK_FIELDS,
    PAIR_FIELDS,
    BadRecord,
    Item,
    Suite,
    _text,
    check_mode,
    collect_items,
    jsonl_records,
    normalise_field,
    read_jsonl_items,
    record_to_item,
)

# the old private names, for code that imported them from here
_collect, _jsonl_records, _check_mode = collect_items, jsonl_records, check_mode

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


# ---------------------------------------------------------------- the registry of suite kinds


@dataclass(frozen=True)
class SuiteRequest:
    """What a loader gets besides the spec: where the BabyLM data is, and what to do with a bad line."""

    data_dir: str | None = None
    on_bad_line: str = "refuse"
    warn: Callable[[str], None] = print


class SuiteKind:
    """One way a suite spec loads. A named kind answers the spec equal to its `name`; one with
    `pattern = True` answers any spec its `matches` accepts, and is tried after every name."""

    name: ClassVar[str] = ""
    pattern: ClassVar[bool] = False
    describe: ClassVar[str] = ""  # a few words for the CLI's help

    @classmethod
    def matches(cls, spec: str) -> bool:
        return spec == cls.name

    @classmethod
    def load(cls, spec: str, request: SuiteRequest) -> Suite | list[Suite]:
        raise NotImplementedError


SUITES = Registry(
    "suite",
    "eval.suites",
    "core.suites",
    (
        *LAYOUT_FOLDERS,
        "all",
        "babylm",
        "builtin",
        "hf",
        "reading-file",
        "jsonl-file",
        "jsonl-folder",
    ),
)


def register_suite(kind_or_name, *, describe: str = ""):
    """Register a suite kind: over a SuiteKind subclass as a plain decorator, or as
    @register_suite("name") over a function (spec, SuiteRequest) -> Suite or list of Suites, which then
    loads the spec "name". A name already registered is refused."""
    if isinstance(kind_or_name, type):
        if not issubclass(kind_or_name, SuiteKind):
            raise UserError(f"{kind_or_name!r} must be a subclass of core.suites.SuiteKind to be registered.")
        return SUITES.register(kind_or_name)
    if not isinstance(kind_or_name, str):
        raise UserError(f"register_suite takes a suite name or a SuiteKind subclass, got {kind_or_name!r}.")

    def register(function: Callable[[str, SuiteRequest], Suite | list[Suite]]):
        kind = type(
            f"{function.__name__}_suite",
            (SuiteKind,),
            {
                "name": kind_or_name,
                "describe": describe,
                "load": classmethod(lambda cls, spec, request: function(spec, request)),
                "__module__": function.__module__,
                "__qualname__": function.__qualname__,
            },
        )
        SUITES.register(kind)
        return function

    return register


def suite_names() -> list[str]:
    """The names a spec may be (the named kinds), in registration order."""
    return [name for name, kind in SUITES.registered().items() if not kind.pattern]


def _suite_hint() -> str:
    return f"use {', '.join(suite_names())}, a .jsonl file or folder, or hf:<dataset id>"


def find_kind(spec: str) -> type[SuiteKind]:
    """The registered kind that loads `spec`: the named kind of that name, else the first pattern kind
    that matches it."""
    kinds = SUITES.registered()
    named = kinds.get(spec)
    if named is not None and not named.pattern:
        return named
    for kind in kinds.values():
        if kind.pattern and kind.matches(spec):
            return kind
    raise UserError(f"Unknown suite '{spec}': {_suite_hint()}.")


class LayoutSuite(SuiteKind):
    """A BabyLM pipeline task, found under the evaluation_data layout (full_eval/ or fast_eval/)."""

    describe = "a BabyLM pipeline task under --data"

    @classmethod
    def load(cls, spec, request):
        folder = find_layout_folder(cls.name, request.data_dir)
        if folder is None:
            where = Path(request.data_dir or ".").expanduser()
            wanted = "reading/reading_data.csv" if cls.name == "reading" else f"{LAYOUT_FOLDERS[cls.name]}/"
            raise UserError(
                f"Suite '{cls.name}' not found: no {wanted} under {where}, its full_eval/ or "
                "fast_eval/ (or evaluation_data/); pass --data pointing at the BabyLM evaluation_data "
                "folder."
            )
        return cls.load_folder(folder, request)

    @classmethod
    def load_folder(cls, folder: Path, request: SuiteRequest) -> Suite:
        """This task's suite from its folder; minimal pairs and EWoK rows are plain JSONL."""
        return load_folder(folder, cls.name, request.on_bad_line, request.warn)


class _EntityTracking(LayoutSuite):
    @classmethod
    def load_folder(cls, folder, request):
        from core.zero_shot import load_entity_tracking

        return load_entity_tracking(folder, request.on_bad_line, request.warn)


class _Wug(LayoutSuite):
    @classmethod
    def load_folder(cls, folder, request):
        from core.zero_shot import load_wug

        return load_wug(folder, cls.name, request.on_bad_line, request.warn)


class _Reading(LayoutSuite):
    @classmethod
    def load_folder(cls, folder, request):
        from core.reading import load_reading  # imports torch: only when the reading suite is loaded

        return load_reading(folder / "reading_data.csv", request.on_bad_line, request.warn)


_LAYOUT_KINDS = {"entity_tracking": _EntityTracking, "wug_adj": _Wug, "wug_past": _Wug, "reading": _Reading}
for _name in LAYOUT_FOLDERS:
    register_suite(type(f"{_name}_suite", (_LAYOUT_KINDS.get(_name, LayoutSuite),), {"name": _name}))


def _load_layout(name: str, folder: Path, on_bad_line: str, warn: Callable[[str], None]) -> Suite:
    """A pipeline task's suite from its folder, by its registered kind."""
    return SUITES.get(name).load_folder(folder, SuiteRequest(None, on_bad_line, warn))


@register_suite
class AllSuites(SuiteKind):
    """Every pipeline task present under --data ("babylm" also says which are missing)."""

    name = "all"
    describe = "every BabyLM task present"

    @classmethod
    def load(cls, spec, request):
        found = [name for name in LAYOUT_FOLDERS if find_layout_folder(name, request.data_dir) is not None]
        where = Path(request.data_dir or ".")
        if not found:
            raise UserError(
                f"No evaluation suites ({', '.join(LAYOUT_FOLDERS.values())}) under {where}: "
                "pass --data pointing at the BabyLM evaluation_data folder, or use the builtin suite."
            )
        missing = [name for name in LAYOUT_FOLDERS if name not in found]
        if cls.name == "babylm" and missing:  # a submission reports every task: say which are left out
            request.warn(f"warning: babylm: no data for {', '.join(missing)} under {where}; left out")
        return [suite for name in found for suite in _load_one(name, request)]


@register_suite
class BabyLMSuites(AllSuites):
    name = "babylm"
    describe = "every BabyLM task, with a summary"


@register_suite
class BuiltinSuite(SuiteKind):
    name = "builtin"
    describe = "template minimal pairs, no data needed"

    @classmethod
    def load(cls, spec, request):
        return builtin_suite()


@register_suite
class HFSuite(SuiteKind):
    name = "hf"
    pattern = True
    describe = "hf:<id>[:config][:split], a Hugging Face dataset"

    @classmethod
    def matches(cls, spec):
        return spec.startswith("hf:")

    @classmethod
    def load(cls, spec, request):
        return load_hf_suite(spec, request.on_bad_line, request.warn)


@register_suite
class ReadingFile(SuiteKind):
    name = "reading-file"
    pattern = True
    describe = "a reading_data.csv file"

    @classmethod
    def matches(cls, spec):
        path = Path(spec).expanduser()
        return path.name == "reading_data.csv" and path.is_file()

    @classmethod
    def load(cls, spec, request):
        return _load_layout("reading", Path(spec).expanduser().parent, request.on_bad_line, request.warn)


@register_suite
class JsonlFile(SuiteKind):
    name = "jsonl-file"
    pattern = True
    describe = "a .jsonl file"

    @classmethod
    def matches(cls, spec):
        return Path(spec).expanduser().is_file()

    @classmethod
    def load(cls, spec, request):
        path = Path(spec).expanduser()
        return Suite(
            name=path.stem, items=read_jsonl_items(path, request.on_bad_line, request.warn), source=str(path)
        )


@register_suite
class JsonlFolder(SuiteKind):
    name = "jsonl-folder"
    pattern = True
    describe = "a folder of .jsonl files, or a pipeline task's folder"

    @classmethod
    def matches(cls, spec):
        return Path(spec).expanduser().is_dir()

    @classmethod
    def load(cls, spec, request):
        path = Path(spec).expanduser()
        task = _layout_name(path)
        if task not in (None, "blimp", "supplement", "ewok"):  # its own format
            return _load_layout(task, path, request.on_bad_line, request.warn)
        return load_folder(path, _suite_name(path), request.on_bad_line, request.warn)


def _load_one(spec: str, request: SuiteRequest) -> list[Suite]:
    loaded = find_kind(spec).load(spec, request)
    return [loaded] if isinstance(loaded, Suite) else list(loaded)


def load_suite(
    spec: str,
    data_dir: str | None = None,
    limit: int | None = None,
    on_bad_line: str = "refuse",
    warn: Callable[[str], None] = print,
) -> list[Suite]:
    check_mode(on_bad_line)
    parts = (
        [part.strip() for part in str(spec).split(",") if part.strip()]
        if not str(spec).startswith("hf:")
        else [spec]
    )
    if not parts:
        raise UserError(f"No suite given: {_suite_hint()}.")
    request = SuiteRequest(data_dir, on_bad_line, warn)
    suites = [suite for part in parts for suite in _load_one(part, request)]
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
    items = collect_items(records, default_uid, on_bad_line, warn)
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
