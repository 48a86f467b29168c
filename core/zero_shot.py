"""Entity tracking and the wug tests: the BabyLM 2025 pipeline's option-ranking tasks beyond minimal pairs.

Entity tracking (Kim & Schuster 2023): each row has an `input_prefix` and five `options`, the first
correct; each option's tokens are scored after the prefix. UID = <file stem>_<numops>_ops; the
pipeline's headline is the mean over numops within each file, then over the files
(evaluation_pipeline/sentence_zero_shot/run.py, process_results).

Wug tests (Hofmann et al. 2024): `sentences` holds two tab-separated whole sentences, scored alone;
the model's preference for the first is softmax(scores)[0], and the result is Spearman's rho between
that and the human `ratio` over every row (compute_results.py, rank_and_evaluate_wug).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from core.errors import UserError
from core.suite_types import BadRecord, Item, Suite, collect_items, jsonl_records


def entity_tracking_item(record, file_stem: str) -> Item:
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, got a {type(record).__name__}")
    prefix, options, numops = record.get("input_prefix"), record.get("options"), record.get("numops")
    if not isinstance(prefix, str):
        raise BadRecord("'input_prefix' is missing or not text")
    if (
        not isinstance(options, list)
        or len(options) < 2
        or not all(isinstance(o, str) and o.strip() for o in options)
    ):
        raise BadRecord("'options' must be a list of at least two texts")
    if not isinstance(numops, int) or isinstance(numops, bool):
        raise BadRecord("'numops' is missing or not a whole number")
    # The pipeline scores prefix + option; the files put one space between them (the prefix ends
    # with it), which is exactly context + " " + option as EWoK targets are scored.
    options = [option.removeprefix(" ") for option in options]
    return Item(
        uid=f"{file_stem}_{numops}_ops",
        field=file_stem,
        term=None,
        good=options[0],
        bad=options[1],
        context=prefix.removesuffix(" "),
        options=options,
    )


def wug_item(record, task: str) -> Item:
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, got a {type(record).__name__}")
    sentences, ratio = record.get("sentences"), record.get("ratio")
    parts = sentences.split("\t") if isinstance(sentences, str) else []
    if len(parts) != 2 or not all(part.strip() for part in parts):
        raise BadRecord("'sentences' must hold two texts separated by a tab")
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        raise BadRecord("'ratio' is missing or not a number") from None
    return Item(uid=task, field=None, term=None, good=parts[0], bad=parts[1], ratio=ratio)


def _read(folder: Path, convert, default_uid, on_bad_line: str, warn: Callable[[str], None]) -> list[Item]:
    files = sorted(Path(folder).glob("*.jsonl"))
    if not files:
        raise UserError(f"{folder} holds no .jsonl files.")
    items = []
    for path in files:
        items += collect_items(jsonl_records(path), default_uid(path), on_bad_line, warn, convert)
    if not items:
        raise UserError(f"{folder} holds no items.")
    return items


def load_entity_tracking(
    folder: Path, on_bad_line: str = "refuse", warn: Callable[[str], None] = print
) -> Suite:
    items = _read(folder, entity_tracking_item, lambda path: path.stem, on_bad_line, warn)
    return Suite(name="entity_tracking", items=items, source=str(folder), macro_by_field=True)


def load_wug(
    folder: Path, task: str, on_bad_line: str = "refuse", warn: Callable[[str], None] = print
) -> Suite:
    items = _read(folder, wug_item, lambda path: task, on_bad_line, warn)
    return Suite(name=task, items=items, source=str(folder), metric="spearman")


def first_option_probability(scores: list[float]) -> float:
    """softmax(scores)[0]: how strongly the model prefers the first form, as the pipeline correlates it."""
    top = max(scores)
    weights = [math.exp(score - top) for score in scores]
    return weights[0] / sum(weights)


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank (as Spearman's rho needs)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(x: list[float], y: list[float]) -> float:
    """NaN when either side is constant or there are fewer than two points."""
    n = len(x)
    if n < 2:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def spearman(x: list[float], y: list[float]) -> float:
    return pearson(_ranks(x), _ranks(y))
