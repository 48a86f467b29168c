"""Evaluating a checkpoint: zero-shot suites (accuracy per UID, per field, macro) and the dev NELBO.

A pair counts 1 when the good side scores higher, 0 when lower and 0.5 on a tie (equal to float
precision, see TIE_TOLERANCE): the official pipeline takes the first option on a tie, which flatters
a model that cannot tell the two apart. Items with more options (entity tracking) share the credit
among the options tied for the top in the same way. Wug suites report Spearman's rho instead of an
accuracy, and the reading suite the gain in R^2 (core.reading); per_uid keeps its shape for all of them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.checkpoint import STEP_NAME, latest_checkpoint, load_checkpoint, snapshot_id, tokenizer_matches
from core.config import Config, EvalConfig, load_saved_config
from core.device import resolve_device
from core.errors import UserError
from core.eval_report import EvalReport, compact_credits, name_time, report_json, report_settings, summarise
from core.masking import Masker
from core.model import MDLM
from core.objective import NoisedBatch, noise_batch, noised_loss
from core.schedules import LogLinear, Schedule
from core.suite_types import Suite
from core.tokenizer import check_vocab, load_tokenizer

ITEMS_PER_CALL = 512  # items per scorer call: large enough to batch well, small enough for progress


# Scores are sums of fp32 log-probabilities, exact only to about 1e-7 of their size: the batch
# shape alone moves them that much. Closer than this, two scores are a tie, not a preference (an
# untrained model scores many word-order pairs within 1e-8 of each other, and the fast and naive
# scorers would otherwise break those ties differently).
TIE_TOLERANCE = 1e-6


def pair_credit(good: float, bad: float) -> float:
    if abs(good - bad) <= TIE_TOLERANCE * max(1.0, abs(good), abs(bad)):
        return 0.5
    return 1.0 if good > bad else 0.0


def option_credit(scores: list[float]) -> float:
    """1 when the first (right) option scores highest, 0 when another does; k options tied for the
    top share it, 1/k each (so a tied pair counts 0.5, as pair_credit)."""
    best = max(scores)
    top = [
        i
        for i, score in enumerate(scores)
        if abs(best - score) <= TIE_TOLERANCE * max(1.0, abs(best), abs(score))
    ]
    return 1.0 / len(top) if 0 in top else 0.0


def item_record(suite: str, uid: str, index: int, scores: list[float], credit: float) -> dict:
    """One scored item: its options' scores in order ([good, bad], or every option), the chosen
    option (the first on a tie, as the official pipeline chooses) and its credit."""
    chosen = 0 if credit > 0 else max(range(len(scores)), key=scores.__getitem__)
    return {"suite": suite, "uid": uid, "index": index, "scores": scores, "chosen": chosen, "credit": credit}


def evaluate(
    scorer,
    suite: Suite,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: str = "",
    predictions: list[dict] | None = None,
) -> EvalReport:
    """Score every item; with a `predictions` list, also append one record per item to it (see
    item_record)."""
    metric = getattr(suite, "metric", "accuracy")
    if metric == "delta_r2":
        from core.reading import evaluate_reading

        return evaluate_reading(scorer, suite, progress, checkpoint, predictions)
    from core.zero_shot import first_option_probability, spearman

    started = time.perf_counter()
    credit: dict[str, list[float]] = {}
    preference: dict[
        str, list[tuple[float, float]]
    ] = {}  # wug: (model's preference for the first, human ratio)
    meta: dict[str, tuple[str | None, str | None]] = {}
    total = len(suite.items)
    for first in range(0, total, ITEMS_PER_CALL):
        chunk = suite.items[first : first + ITEMS_PER_CALL]
        # every option of every item side by side, so one call batches all of them together
        texts = [text for item in chunk for text in item.texts()]
        contexts = [item.context for item in chunk for _ in item.texts()]
        scores, at = scorer.score_texts(texts, contexts), 0
        for item in chunk:
            mine = scores[at : at + len(item.texts())]
            at += len(mine)
            earlier, value = credit.setdefault(item.uid, []), option_credit(mine)
            record = item_record(
                suite.name, item.uid, len(earlier), mine, value
            )  # index: its place in its UID
            if item.ratio is not None:
                record.update(prob=first_option_probability(mine), ratio=item.ratio)
                preference.setdefault(item.uid, []).append((record["prob"], item.ratio))
            if predictions is not None:
                predictions.append(record)
            earlier.append(value)
            meta.setdefault(item.uid, (item.field, item.term))
        if progress is not None:
            progress(first + len(chunk), total)

    if metric == "spearman":
        per_uid = {
            uid: {
                "accuracy": spearman(*zip(*pairs)),
                "n": len(pairs),
                "field": None,
                "term": None,
                "metric": metric,
            }
            for uid, pairs in preference.items()
        }
        pooled = [pair for pairs in preference.values() for pair in pairs]
    else:
        per_uid = {
            uid: {
                "accuracy": sum(values) / len(values),
                "n": len(values),
                "field": meta[uid][0],
                "term": meta[uid][1],
            }
            for uid, values in credit.items()
        }
    per_field, macro = summarise(per_uid, getattr(suite, "macro_by_field", False))
    if metric == "spearman":  # one correlation over every pair, not a mean of the UIDs' correlations
        macro = spearman(*zip(*pooled)) if pooled else float("nan")
    return EvalReport(
        suite=suite.name,
        per_uid=per_uid,
        per_field=per_field,
        macro=macro,
        n=total,
        seconds=time.perf_counter() - started,
        checkpoint=checkpoint,
        skipped=getattr(suite, "skipped", 0),
        metric=metric,
        time=time.time(),
        credits=None if metric == "spearman" else compact_credits(credit),
        **report_settings(scorer, suite),
    )


# ---------------------------------------------------------------- loading a checkpoint


def find_run_and_checkpoint(target: str) -> tuple[Path, Path]:
    """(run folder, checkpoint folder) from a run folder or one of its checkpoints/step-N folders."""
    path = Path(target).expanduser()
    if not path.exists():
        raise UserError(
            f"{target} does not exist: give a run folder or a checkpoint folder "
            "(runs/NAME/checkpoints/step-N)."
        )
    if (path / "config.yaml").is_file():
        ckpt = latest_checkpoint(path / "checkpoints")
        if ckpt is None:
            raise UserError(
                f"Run {path} has no checkpoint yet: evaluate it after its first checkpoint is written."
            )
        return path, ckpt
    if (path / "model.safetensors").is_file() or (path / "meta.json").is_file():
        run = path.parent.parent
        if not (run / "config.yaml").is_file():
            raise UserError(
                f"Checkpoint {path} is not inside a run folder (no config.yaml in {run}), so its model "
                "shape is unknown."
            )
        return run, path
    raise UserError(
        f"{target} is neither a run folder (with config.yaml) nor a checkpoint folder (with "
        "model.safetensors)."
    )


def check_weights_fit(ckpt: Path, model: MDLM, cfg: Config) -> None:
    """Compare tensor shapes from the safetensors header before loading, to say what does not fit."""
    from safetensors import safe_open

    path = ckpt / "model.safetensors"
    if not path.is_file():
        raise UserError(f"Checkpoint {ckpt} has no model.safetensors: it is incomplete.")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"Checkpoint {ckpt} is damaged ({str(e).splitlines()[0][:120]}).") from None
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    vocab = shapes.get("word_embedding.weight")
    if vocab is not None and vocab[0] != cfg.data.vocab_size:
        raise UserError(
            f"Checkpoint {ckpt} has a vocabulary of {vocab[0]:,} ids but its run's config says "
            f"data.vocab_size {cfg.data.vocab_size:,}: the checkpoint belongs to another tokenizer."
        )
    for name, shape in expected.items():
        if name in shapes and shapes[name] != shape:
            raise UserError(
                f"Checkpoint {ckpt} does not fit the model of its run's config.yaml: {name} is "
                f"{list(shapes[name])} in the checkpoint but {list(shape)} in the config."
            )


# How long a reader keeps following `latest` while a trainer replaces checkpoints under it: long
# enough to ride out a few saves, short enough that a wedged loop still ends in a sentence.
RETRY_FOR_S = 30.0


def load_for_eval(target: str, weights: str = "ema", device="cpu", warn: Callable[[str], None] = print):
    """(model in eval mode on device, tokenizer, config, checkpoint folder)."""
    if weights not in ("ema", "raw"):
        raise UserError(f"weights must be 'ema' or 'raw', got '{weights}'.")
    device = resolve_device(str(device))
    # A trainer may delete or replace the checkpoint between lookup and load (rotation): while the
    # one `latest` names keeps changing, follow it instead of calling a whole checkpoint damaged.
    deadline, replaced = time.monotonic() + RETRY_FOR_S, 0
    while True:
        run, ckpt = find_run_and_checkpoint(target)
        seen = snapshot_id(ckpt)
        try:
            model, tokenizer, cfg = _load_checkpoint_model(run, ckpt, weights, warn)
            break
        except UserError:
            if not _replaced_since(target, seen):
                raise  # the same folder as before: really damaged or incomplete
            replaced += 1
            if time.monotonic() > deadline:
                raise _kept_replacing(run, replaced) from None
    model.to(device).eval()
    return model, tokenizer, cfg, ckpt


def _replaced_since(target: str, seen: tuple | None) -> bool:
    """Whether the checkpoint `target` resolves to now is another than the one `seen` (rotated away
    or rewritten); False when it no longer resolves at all, so the first error stands."""
    try:
        return snapshot_id(find_run_and_checkpoint(target)[1]) != seen
    except UserError:
        return False


def _kept_replacing(run: Path, times: int) -> UserError:
    return UserError(
        f"The trainer of {run} replaced its latest checkpoint {times} times in {RETRY_FOR_S:.0f} s, "
        "each time deleting the one being read: train with train.keep_checkpoints above 1, or give a "
        "checkpoint folder that rotation keeps (a chck_ milestone, or a step-N once training ends)."
    )


def _load_checkpoint_model(run: Path, ckpt: Path, weights: str, warn: Callable[[str], None]):
    """(model on the CPU, tokenizer, config) from one checkpoint folder of a run."""
    cfg = load_saved_config(run / "config.yaml")
    tokenizer = load_tokenizer(run / "tokenizer.json")
    model = MDLM(cfg.model, cfg.data.vocab_size)
    check_vocab(tokenizer, cfg.data.vocab_size, run / "tokenizer.json")
    check_weights_fit(ckpt, model, cfg)
    try:
        _, ema = load_checkpoint(ckpt, model, None, torch.device("cpu"))
        same_tokenizer = tokenizer_matches(ckpt, run / "tokenizer.json")
    except (ValueError, OSError, RuntimeError) as e:
        raise UserError(f"Checkpoint {ckpt} cannot be loaded ({str(e).splitlines()[0][:160]}).") from None
    if not same_tokenizer:
        raise UserError(
            f"{run / 'tokenizer.json'} is not the tokenizer {ckpt.name} was trained with (its sha256 "
            "differs from the one in meta.json): put back the run's own tokenizer.json."
        )
    if weights == "ema":
        if ema is None:
            warn(
                f"warning: checkpoint {ckpt.name} has no EMA weights (train.ema was 0); using the raw weights"
            )
        else:
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if name in ema["shadow"]:
                        parameter.copy_(ema["shadow"][name])
    return model, tokenizer, cfg


# ---------------------------------------------------------------- dev NELBO


@dataclass
class DevSums:
    """What dev_sums adds up over the dev batches."""

    weighted_ce: float = 0.0  # each batch's loss x its non-pad tokens, undoing the per-batch normaliser
    masked_ce: float = 0.0  # CE summed over the masked tokens
    tokens: int = 0  # non-pad tokens, <s> included: what a batch's loss is normalised by
    maskable: int = 0  # tokens a mask can hit: <s> and pads are not text, they are not predicted
    masked: int = 0


def dev_sums(
    model,
    dev: np.ndarray,
    batch_size: int,
    noise: Callable[[torch.Tensor], NoisedBatch],
    subs: bool,
) -> DevSums:
    """The loss of `model` on the dev chunks `dev`, batch_size at a time, each batch noised by `noise`
    (which leaves it on the model's device): the one loop of the trainer's dev loss and of dev_nelbo,
    which differ in their forward process. The caller sets eval mode, no_grad and the precision."""
    chunks = torch.from_numpy(np.asarray(dev, dtype=np.int64))
    sums = DevSums()
    for first in range(0, len(chunks), batch_size):
        out = noised_loss(model, noise(chunks[first : first + batch_size]), subs)
        sums.weighted_ce += out.loss.item() * out.n_tokens
        sums.masked_ce += out.masked_ce.item() * out.n_masked
        sums.tokens += out.n_tokens
        sums.maskable += out.n_maskable
        sums.masked += out.n_masked
    return sums


@torch.no_grad()
def dev_nelbo(
    model, data, cfg: Config, device, batches: int = 10, seed: int = 0, schedule: Schedule | None = None
) -> dict:
    """NELBO per token on the first batches x batch_size dev chunks, and the perplexity bound
    exp(NELBO / token). Exact weights (power 1) and uniform masks, whatever the run trained with,
    so that runs compare; the continuous-time NELBO is the same for every schedule whose rate spans
    (0, 1), only its variance differs, hence log-linear by default. Fixed seed: same t and masks
    every call."""
    device = torch.device(device)
    batch_size = cfg.train.micro_batch
    n = min(len(data.dev), batches * batch_size)
    if n == 0:
        raise UserError("The dev split is empty, so there is no dev NELBO to compute.")
    schedule = schedule or LogLinear(cfg.schedule.eps)
    masker = Masker("uniform")
    generator = torch.Generator(device=device).manual_seed(seed)

    def noise(ids: torch.Tensor) -> NoisedBatch:  # drawn on the device, where the ids go first
        return noise_batch(
            ids.to(device),
            schedule=schedule,
            masker=masker,
            power=1.0,
            progress=1.0,
            epoch=0,
            total_epochs=1,
            generator=generator,
        )

    was_training = model.training
    model.eval()
    try:
        sums = dev_sums(model, data.dev[:n], batch_size, noise, cfg.objective.subs)
    finally:
        model.train(was_training)
    per_token = sums.weighted_ce / max(sums.maskable, 1)
    return {
        "dev_nelbo_per_token": per_token,
        "dev_ppl_bound": math.exp(min(per_token, 700.0)),  # exp overflows past ~709
        "dev_masked_ce": sums.masked_ce / max(sums.masked, 1),
        "dev_tokens": sums.maskable,
        "dev_sequences": n,
        "dev_seed": seed,
        "dev_schedule": type(schedule).__name__,
    }


def dev_report(model, cfg: Config, checkpoint: Path, log: Callable[[str], None] = print) -> dict:
    """`eval --suite dev` and the Eval screen's dev row: the dev NELBO of a checkpoint's model with the
    fixed seeds, as the report saved by save_dev_report."""
    from core.dataset import prepare_data

    data = prepare_data(cfg.data, log=log)
    log("dev NELBO: scoring ...")
    return {
        "suite": "dev",
        "checkpoint": str(checkpoint),
        **dev_nelbo(model, data, cfg, next(model.parameters()).device),
    }


def save_dev_report(result: dict, eval_dir: Path, step: int | None) -> Path:
    """eval/dev-step-N-nelbo.json, written atomically (the dev set is fixed: one report per step)."""
    from core.runs import atomic_write_json

    eval_dir.mkdir(parents=True, exist_ok=True)
    path = eval_dir / f"dev-step-{step if step is not None else 'x'}-nelbo.json"
    atomic_write_json(path, result)
    return path


# ---------------------------------------------------------------- scorers and reports from a config


def make_scorer(
    model,
    tokenizer,
    cfg: Config,
    device,
    backend: str | None = None,
    rate_value: str | None = None,
    draws: int | None = None,
):
    """The scorer a run's `eval` section asks for; arguments override the section. cfg.eval.weights
    must name the weights the model holds: reports record them."""
    from core.scoring import NELBOScorer, PLLScorer

    backend = backend or cfg.eval.backend
    if backend == "pll":
        value = cfg.eval.rate_value if rate_value is None else rate_value
        scorer = PLLScorer(
            model,
            tokenizer,
            device,
            rate_value=value if value == "realised" else float(value),
            subs=cfg.objective.subs,
        )
    elif backend == "nelbo":
        # log-linear: the same bound as any schedule spanning (0, 1), with the lowest variance (see dev_nelbo)
        scorer = NELBOScorer(
            model,
            tokenizer,
            device,
            LogLinear(cfg.schedule.eps),
            draws=draws or cfg.eval.draws,
            subs=cfg.objective.subs,
        )
    else:
        raise UserError(f"Unknown scoring backend '{backend}'; use pll or nelbo.")
    scorer.model_weights = cfg.eval.weights
    return scorer


def settings_suffix(report: EvalReport) -> str:
    """How the report's settings differ from the defaults (all items, EMA weights, rate 0, 16 draws),
    e.g. "-raw-limit20": reports made differently get different names, so none replaces another."""
    parts = ["raw"] if report.weights == "raw" else []
    if report.rate_value not in (None, 0):
        parts.append("realised" if report.rate_value == "realised" else f"rate{report.rate_value}")
    if report.draws not in (None, EvalConfig.draws):
        parts.append(f"draws{report.draws}")
    if report.limit is not None:
        parts.append(f"limit{report.limit}")
    return "".join(f"-{part}" for part in parts)


def save_report(report: EvalReport, eval_dir: Path, step: int | None) -> Path:
    """eval/<suite>-step-<N>-<backend><settings_suffix>-<UTC time>.json, written atomically; the
    report gets its step, and the time now unless it knows when it was made. Other settings give
    another name and the time another again, so no evaluation replaces an earlier one."""
    from core.runs import atomic_write_text

    report.step = step
    report.time = time.time() if report.time is None else report.time
    eval_dir.mkdir(parents=True, exist_ok=True)
    name = report.suite.replace("/", "_").replace(":", "_")
    stem = (
        f"{name}-step-{step if step is not None else 'x'}-{report.backend}{settings_suffix(report)}"
        f"-{name_time(report.time)}"
    )
    path, again = eval_dir / f"{stem}.json", 1
    while path.exists():  # made within the same second
        again += 1
        path = eval_dir / f"{stem}-{again}.json"
    atomic_write_text(path, report_json(report.to_dict()))
    return path


def checkpoint_step(ckpt: Path) -> int | None:
    """The step a checkpoint holds: from a step-N name, else (a chck_* milestone) from its meta.json."""
    if (match := STEP_NAME.fullmatch(ckpt.name)) is not None:
        return int(match.group(1))
    try:
        step = json.loads((ckpt / "meta.json").read_bytes()).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None
