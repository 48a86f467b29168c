"""The Runs table's columns (more of them on a wider terminal), the order of its rows and its filter.

Plain functions of RunRow values, so the screen only decides what is shown and keeps its cursor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rich.cells import cell_len
from rich.text import Text

from mdlm_tui.common import formatting as fmt
from mdlm_tui.common.state_label import state_text
from mdlm_tui.run_list.summaries import RunRow

MARK = "●"  # a character, not a colour: a marked row reads as marked under NO_COLOR too
DEFAULT_SORT = "age"  # newest heartbeat first


@dataclass(frozen=True)
class Column:
    key: str  # also its heading
    tier: int  # 0: always shown; a wider terminal adds tier 1, then 2, then 3
    cell: Callable[[RunRow], str | Text]
    sort_value: Callable[[RunRow], object] | None  # None: not sortable; a value of None sorts last


def _text(value: str) -> str | None:
    return value.casefold() if value else None


# Tier 0 is the table an 80-column terminal shows; a wider one adds the numbers a run is judged by,
# then its preset, then its recipe, as far as they fit whole (fitting below).
COLUMNS = (
    Column("mark", 0, lambda row: "", None),  # drawn by the screen, which knows the marks
    Column("run", 0, lambda row: row.name, lambda row: row.name.casefold()),
    Column("preset", 2, lambda row: row.preset or "--", lambda row: _text(row.preset)),
    Column("parameters", 3, lambda row: row.recipe or "--", lambda row: _text(row.recipe)),
    Column("state", 0, lambda row: state_text(row.health), lambda row: row.health),
    Column("step", 0, lambda row: _step(row), lambda row: row.status.get("step")),
    Column("loss", 0, lambda row: fmt.number(row.loss), lambda row: row.loss),
    Column("dev loss", 1, lambda row: fmt.number(row.dev_loss), lambda row: row.dev_loss),
    Column("eval", 0, lambda row: row.eval_label, lambda row: row.eval_macro),
    Column("tokens/s", 1, lambda row: fmt.count(row.tokens_per_s), lambda row: row.tokens_per_s),
    Column("duration", 1, lambda row: fmt.duration(row.duration_s), lambda row: row.duration_s),
    Column("age", 0, lambda row: fmt.age(row.age_s), lambda row: row.age_s),
)
BY_KEY = {column.key: column for column in COLUMNS}
PADDING = 2  # the table's cell padding, one space each side
SCROLLBAR = 2  # kept free: a long list brings a vertical scrollbar


def _step(row: RunRow) -> str:
    return f"{row.status.get('step', 0)}/{row.status.get('total_steps') or '?'}"


def fitting(rows: list[RunRow], width: int) -> list[Column]:
    """The most tiers of columns whose widest cells fit `width` whole, measured on every run (shown or
    filtered out, so a filter never changes the columns)."""
    needed = {column.key: _width(column, rows) for column in COLUMNS}
    for tier in range(max(column.tier for column in COLUMNS), 0, -1):
        chosen = [column for column in COLUMNS if column.tier <= tier]
        if sum(needed[column.key] for column in chosen) <= width - SCROLLBAR:
            return chosen
    return [column for column in COLUMNS if column.tier == 0]


def _width(column: Column, rows: list[RunRow]) -> int:
    if column.key == "mark":
        return cell_len(MARK) + PADDING
    return PADDING + max([cell_len(column.key), *(_cell_len(column.cell(row)) for row in rows)])


def _cell_len(value: str | Text) -> int:
    return value.cell_len if isinstance(value, Text) else cell_len(value)


def cells(row: RunRow, columns: list[Column], marked: bool) -> tuple:
    return tuple(
        (MARK if marked else " ") if column.key == "mark" else column.cell(row) for column in columns
    )


def next_sort(current: str, shown: list[Column]) -> str:
    """The sortable column after `current` among those shown, wrapping round."""
    keys = [column.key for column in shown if column.sort_value is not None]
    return keys[(keys.index(current) + 1) % len(keys)] if current in keys else keys[0]


def ordered(rows: dict[str, RunRow], sort: str, reverse: bool) -> list[str]:
    """Row keys sorted by column `sort`, rows without a value last whichever the direction; equal values
    (and the rows without one) stay newest heartbeat first."""
    newest = sorted(rows, key=lambda key: -(rows[key].status.get("heartbeat") or float("-inf")))
    value = BY_KEY[sort].sort_value
    present = [key for key in newest if value(rows[key]) is not None]
    missing = [key for key in newest if value(rows[key]) is None]
    return sorted(present, key=lambda key: value(rows[key]), reverse=reverse) + missing


def matches(row: RunRow, words: str) -> bool:
    """Every word of the filter is part of the run's name, preset, parameters or state (any case)."""
    haystack = " ".join((row.name, row.preset, row.recipe, row.health)).casefold()
    return all(word in haystack for word in words.casefold().split())


def sort_words(sort: str, reverse: bool) -> str:
    return f"sorted by {sort} {'↓' if reverse else '↑'}"
