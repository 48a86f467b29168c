"""The types every suite loader shares: Item, Suite, BadRecord, and the JSONL helpers that turn lines into
Items. The loaders (core.suites, core.zero_shot, core.reading) import them from here, and core.suites
imports the loaders, so no loader imports core.suites back; core.suites re-exports these names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from core.errors import UserError

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


def collect_items(
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


def jsonl_records(path: Path) -> Iterable[tuple[str, object]]:
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


def check_mode(on_bad_line: str) -> None:
    if on_bad_line not in ("refuse", "skip"):
        raise UserError(f"on_bad_line must be 'refuse' or 'skip', got '{on_bad_line}'.")


def read_jsonl_items(
    path: Path, on_bad_line: str = "refuse", warn: Callable[[str], None] = print
) -> list[Item]:
    """A JSONL file's items; UID from each record, else the file stem (the BLiMP supplement's rule)."""
    path = Path(path)
    items = collect_items(jsonl_records(path), path.stem, on_bad_line, warn)
    if not items:
        raise UserError(
            f"{path} holds no items: expected JSON lines with sentence_good and sentence_bad, or EWoK rows."
        )
    return items
