"""The reading suite (de Varda et al. 2023), as the BabyLM 2025 pipeline scores it
(evaluation_pipeline/reading/run.py and evaluation_functions.py):

- Surprisal of each word given the sentence before it, in nats, by the pipeline's method for masked
  models: the context, then three [MASK] tokens; the word's first token is predicted at the first mask.
  A word of several tokens multiplies in each next token the same way, the earlier ones appended to
  the context. The word is tokenised as it stands in the sentence, after its space (the pipeline
  tokenises the bare word, which with this tokenizer would be a word-initial form no text has).
- Linear regressions (ordinary least squares with an intercept). Eye tracking: each of the four
  RT measures ~ Subtlex_log10 + length + context_length and their pairwise products; then + surprisal.
  Self-paced reading, with one word of spillover: the same with prev_length and the previous word's
  surprisal (all pairwise products); then + surprisal. Each fit uses the rows with none of its
  variables missing.
- Reported per measure: the gain in R^2 as a share of what was left to explain,
  (R^2_model - R^2_baseline) / (1 - R^2_baseline); the eye-tracking score is the mean over its four
  measures, the self-paced one its own. The report's macro is the mean of those two scores (the
  pipeline prints them apart; both are the report's per-field numbers).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from core.errors import UserError
from core.objective import masked_cross_entropy
from core.specials import BOS_ID, MASK_ID
from core.suite_types import Suite

MASKS = 3  # the pipeline's --number_of_mask_tokens_to_append default
EYE_TRACKING = ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")
SELF_PACED = "self_paced_reading_time"
BASELINE = ("Subtlex_log10", "length", "context_length")
SPILLOVER = BASELINE + ("prev_length", "prev_pred")
NUMBERS = BASELINE + ("prev_length",) + EYE_TRACKING + (SELF_PACED,)
COLUMNS = ("item", "word", "prev_item", "prev_word") + NUMBERS


@dataclass
class ReadingWord:
    context: str  # the sentence before the word (the file's "item")
    word: str
    prev_context: str | None  # None: no previous word in the file (its surprisal is missing)
    prev_word: str | None
    values: dict[str, float]  # predictors and measures; NaN where the file has none


@dataclass
class ReadingSentence:
    """One sentence's words: the unit --limit counts."""

    uid: str
    text: str
    words: list[ReadingWord] = dataclasses.field(default_factory=list)
    field: str | None = None
    term: str | None = None
    context: str | None = None
    extra_tokens: int = MASKS  # appended after the context when scoring (see scoring.drop_long_items)

    def texts(self) -> list[str]:
        return [self.text]


class BadRow(ValueError):
    pass


def _number(row: dict, key: str) -> float:
    text = (row.get(key) or "").strip()
    if not text:
        return float("nan")  # the file leaves a value out where it has none (pandas reads it as NaN)
    try:
        return float(text)
    except ValueError:
        raise BadRow(f"'{key}' is '{text[:20]}', not a number") from None


def _word(row: dict) -> ReadingWord:
    context, word = row.get("item") or "", (row.get("word") or "").strip()
    if not word:
        raise BadRow("'word' is empty")
    prev_context, prev_word = row.get("prev_item") or "", (row.get("prev_word") or "").strip()
    has_prev = bool(prev_context.strip() and prev_word)
    return ReadingWord(
        context.strip(),
        word,
        prev_context.strip() if has_prev else None,
        prev_word if has_prev else None,
        {key: _number(row, key) for key in NUMBERS},
    )


def load_reading(path: Path, on_bad_line: str = "refuse", warn: Callable[[str], None] = print):

    path = Path(path)
    sentences: dict[str, ReadingSentence] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise UserError(
                    f"{path} is not the BabyLM reading file: it has no column {', '.join(missing)}."
                )
            for row in reader:
                try:
                    word = _word(row)
                except BadRow as e:
                    if on_bad_line == "skip":
                        warn(f"warning: {path}:{reader.line_num}: {e}; line skipped")
                        continue
                    raise UserError(
                        f"{path}:{reader.line_num}: {e} (pass --on-bad-line skip to skip such lines)."
                    ) from None
                # words arrive shuffled: gather each sentence's, in the file's order of sentences
                key = row.get("sent_id") or row.get("sentence") or word.context
                sentence = sentences.setdefault(
                    key, ReadingSentence("reading", (row.get("sentence") or "").strip())
                )
                sentence.words.append(word)
    except OSError as e:
        raise UserError(f"Cannot read {path}: {e.strerror}.") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text.") from None
    if not sentences:
        raise UserError(f"{path} holds no words.")
    for sentence in sentences.values():
        sentence.text = sentence.text or max((w.context + " " + w.word for w in sentence.words), key=len)
    return Suite(name="reading", items=list(sentences.values()), source=str(path), metric="delta_r2")


# ---------------------------------------------------------------- surprisal


def surprisals(
    model,
    tokenizer,
    device,
    pairs: list[tuple[str, str]],
    rate_value: float | str = 0.0,
    subs: bool = True,
    batch_tokens: int = 8192,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """-ln p(word | context) for each (context, word), by the masked method above."""
    previous = tokenizer.encode_special_tokens
    tokenizer.encode_special_tokens = True  # "<mask>" in a sentence is text, as in training data
    try:
        contexts = [e.ids for e in tokenizer.encode_batch([c for c, _ in pairs], add_special_tokens=False)]
        words = [
            e.ids
            for e in tokenizer.encode_batch([f" {w}" if c else w for c, w in pairs], add_special_tokens=False)
        ]
    finally:
        tokenizer.encode_special_tokens = previous
    rows_by_length: dict[int, list[tuple[int, list[int], int, int]]] = defaultdict(
        list
    )  # (pair, ids, slot, target)
    for index, (context, word) in enumerate(zip(contexts, words)):
        for k, target in enumerate(word):
            ids = [BOS_ID] + context + word[:k] + [MASK_ID] * MASKS
            rows_by_length[len(ids)].append((index, ids, len(ids) - MASKS, target))
    totals = torch.zeros(len(pairs), dtype=torch.float64)
    device = torch.device(device)
    done, count = 0, sum(len(rows) for rows in rows_by_length.values())
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for length, rows in sorted(rows_by_length.items()):
                # the time input: the scorer's rate, or "realised": the masked share of the text after <s>
                rate = MASKS / (length - 1) if rate_value == "realised" else float(rate_value)
                step = max(1, batch_tokens // length)
                for first in range(0, len(rows), step):
                    batch = rows[first : first + step]
                    ids = torch.tensor([row[1] for row in batch], dtype=torch.long)
                    at = torch.zeros_like(ids, dtype=torch.bool)
                    at[torch.arange(len(batch)), [row[2] for row in batch]] = True
                    rates = torch.full((len(batch),), rate, dtype=torch.float32)
                    logits = model(ids.to(device), rate=rates.to(device), output_mask=at.to(device))
                    targets = torch.tensor([row[3] for row in batch], device=device)
                    nats = masked_cross_entropy(logits, targets, subs).double().cpu()
                    totals.index_add_(0, torch.tensor([row[0] for row in batch]), nats)
                    done += len(batch)
                    if progress is not None:
                        progress(done, count)
    finally:
        model.train(was_training)
    return totals.tolist()


# ---------------------------------------------------------------- regressions


def r_squared(y: list[float], columns: list[list[float]]) -> float:
    """R^2 of y on an intercept and the columns, by least squares (the minimum-norm solution when
    columns are collinear, as statsmodels' pseudo-inverse gives). NaN without a residual degree of
    freedom: a fit through every point says nothing (a --limit of a sentence or two)."""
    if len(y) < 2:
        return float("nan")
    target = torch.tensor(y, dtype=torch.float64)
    design = torch.tensor([[1.0] * len(y)] + columns, dtype=torch.float64).T
    fit = torch.linalg.lstsq(design, target[:, None], driver="gelsd")
    residual = target - (design @ fit.solution)[:, 0]
    total = ((target - target.mean()) ** 2).sum()
    if total == 0 or int(fit.rank) >= len(y):
        return float("nan")
    return float(1 - (residual @ residual) / total)


def r2_gain(rows: list[dict[str, float]], measure: str, predictors: tuple[str, ...]) -> dict:
    """The baseline fit (predictors and their pairwise products) and the one with surprisal added,
    each on its own complete rows; the gain as a share of the variance the baseline left."""

    def fit(names: tuple[str, ...], extra: tuple[str, ...]) -> tuple[float, int]:
        complete = [
            row for row in rows if not any(math.isnan(row[name]) for name in (measure, *names, *extra))
        ]
        columns = [[row[name] for row in complete] for name in names]
        columns += [[row[a] * row[b] for row in complete] for a, b in itertools.combinations(names, 2)]
        columns += [[row[name] for row in complete] for name in extra]
        return r_squared([row[measure] for row in complete], columns), len(complete)

    baseline, _ = fit(predictors, ())
    model, n = fit(predictors, ("pred",))
    gain = (model - baseline) / (1 - baseline) if baseline < 1 else float("nan")
    return {"accuracy": gain, "n": n, "r2_baseline": baseline, "r2_model": model}


def reading_results(rows: list[dict[str, float]]) -> dict[str, dict]:
    """Per measure: the pipeline's reported regressions; rows hold the file's numbers plus "pred"
    (the word's surprisal) and "prev_pred" (the previous word's)."""
    results = {
        measure: {**r2_gain(rows, measure, BASELINE), "field": "eye_tracking"} for measure in EYE_TRACKING
    }
    results[SELF_PACED] = {**r2_gain(rows, SELF_PACED, SPILLOVER), "field": "self_paced_reading"}
    return {measure: {**result, "term": None, "metric": "delta_r2"} for measure, result in results.items()}


def evaluate_reading(
    scorer, suite, progress=None, checkpoint: str = "", predictions: list[dict] | None = None
):
    from core.eval_report import EvalReport, report_settings

    started = time.perf_counter()
    words = [word for sentence in suite.items for word in sentence.words]
    wanted = list(
        dict.fromkeys(
            [(w.context, w.word) for w in words]
            + [(w.prev_context, w.prev_word) for w in words if w.prev_context is not None]
        )
    )
    # the scorer's model and settings; the masked method is the same whatever its backend
    values = surprisals(
        scorer.model,
        scorer.tokenizer,
        scorer.device,
        wanted,
        getattr(scorer, "rate_value", 0.0),
        getattr(scorer, "subs", True),
        getattr(scorer, "batch_tokens", 8192),
        progress,
    )
    surprisal = dict(zip(wanted, values))
    rows = []
    for index, w in enumerate(words):
        prev = surprisal[(w.prev_context, w.prev_word)] if w.prev_context is not None else float("nan")
        rows.append({**w.values, "pred": surprisal[(w.context, w.word)], "prev_pred": prev})
        if predictions is not None:
            predictions.append(
                {
                    "suite": suite.name,
                    "uid": "reading",
                    "index": index,
                    "context": w.context,
                    "word": w.word,
                    "surprisal": rows[-1]["pred"],
                    "prev_surprisal": None if math.isnan(prev) else prev,
                }
            )
    per_uid = reading_results(rows)
    eye = [per_uid[m]["accuracy"] for m in EYE_TRACKING]
    per_field = {"eye_tracking": sum(eye) / len(eye), "self_paced_reading": per_uid[SELF_PACED]["accuracy"]}
    return EvalReport(
        suite=suite.name,
        per_uid=per_uid,
        per_field=per_field,
        macro=sum(per_field.values()) / 2,
        n=len(words),
        seconds=time.perf_counter() - started,
        checkpoint=checkpoint,
        skipped=getattr(suite, "skipped", 0),
        metric="delta_r2",
        **report_settings(scorer, suite),
    )
