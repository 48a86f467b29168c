"""The training loop: one process, one run directory (DESIGN.md).

Everything a watcher needs goes to the run directory: status.json (with a heartbeat),
metrics.jsonl (a line per logging interval, dev losses, system stats) and checkpoints/.
A seed fixes data order, masks and init; resume restores optimizer, EMA, RNG and data position,
so a resumed run continues bit-for-bit on CPU.

Words seen: each step adds the words of the chunks it consumed (PreparedData.train_words), so the
count is exact and follows the data order through a resume; train.save_at_words keeps a checkpoint
the first step at or past each milestone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import psutil
import torch
from torch.nn.parallel import DistributedDataParallel

from core import checkpoint as ckpt
from core.allocator import release_free_memory, tune_allocator
from core.config import Config, milestone_name, parse_budget, parse_milestones, to_yaml
from core.control import ControlReader
from core.corpus import find_corpus
from core.dataset import BatchStream, PreparedData, masking_counts, prepare_data
from core.device import resolve_device
from core.distributed import Alone, Group, World, join, launched_worker, stop_with_launcher, worker_device
from core.errors import TrainingFailed, UserError
from core.evaluate import dev_sums
from core.masking import Masker, curriculum_power, frequency_scores
from core.memory import check_fits
from core.model import build_model
from core.objective import NoisedBatch, noise_batch, noised_loss
from core.optim import EMA, build_optimizer, lr_multiplier
from core.probes import Probes
from core.registry import needs_scores
from core.runs import ACTIVE_STATES, IMPORTED_MARKER, RunDir, atomic_write_text, trainer_alive
from core.schedules import build_schedule
from core.specials import PAD_ID
from core.telemetry import SystemMonitor
from core.tokenizer import check_vocab


@dataclass
class Plan:
    total_steps: int
    total_epochs: int
    steps_per_epoch: float


def plan_steps(
    cfg: Config, steps_per_epoch: int, steps_for_words: Callable[[float], int] | None = None
) -> Plan:
    """Turn the budget ('N steps', 'N tokens', 'N words', 'N epochs') into optimizer steps, each a global
    batch. steps_for_words (BatchStream.batches_for_words) makes a words budget exact: the first step at
    or past N words; without it the words are estimated as nominal tokens."""
    amount, unit = parse_budget(cfg.train.budget)
    if unit == "steps":
        total = int(amount)
    elif unit == "words" and steps_for_words is not None:
        total = steps_for_words(amount)
    elif unit in ("tokens", "words"):  # nominal tokens: sequences x seq_len per optimizer step
        total = math.ceil(amount / (cfg.train.global_batch * cfg.data.seq_len))
    else:
        total = math.ceil(amount * steps_per_epoch)
    total = max(total, 1)
    return Plan(total, max(1, math.ceil(total / steps_per_epoch)), steps_per_epoch)


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


# The fields of StepSums that one worker adds up from its own rows; the workers' sums add up to the
# whole run's (its loss share, CE summed over masked tokens, the counts, the rates of its rows).
WORKER_SUMS = ("loss", "ce_sum", "masked", "maskable", "rate_sum", "rows")


@dataclass
class StepSums:
    """What one training step adds to its logging interval, and an interval's total of them: WORKER_SUMS
    from this worker's rows, and the gradient norm and global tokens, which every worker knows whole.
    On CUDA the loss, CE and norm stay tensors on the device until the interval is logged."""

    loss: float | torch.Tensor = 0.0  # this worker's share of the step's loss
    ce_sum: float | torch.Tensor = 0.0  # CE summed over its masked tokens
    masked: float = 0.0  # its masked tokens
    maskable: float = 0.0  # its tokens a mask could hit
    rate_sum: float = 0.0  # the schedule's mask rates of its rows, summed
    rows: float = 0.0  # its rows
    grad_norm: float | torch.Tensor = 0.0
    tokens: float = 0.0  # non-pad tokens of the global batch

    def values(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


class _Interval:
    """The StepSums of one logging interval."""

    def __init__(self):
        self.steps = 0
        self.sums = StepSums()
        self.start = time.perf_counter()

    def add(self, step: StepSums) -> None:
        self.steps += 1
        for name, value in step.values().items():
            total = getattr(self.sums, name)
            total += value  # a CUDA step's loss and norm stay tensors on the device until logged
            setattr(self.sums, name, total)

    def on_host(self) -> StepSums:
        """The sums as numbers: the interval's one wait for the device."""
        sums = self.sums.values()
        tensors = [name for name, value in sums.items() if torch.is_tensor(value)]
        if tensors:
            values = torch.stack([sums[name].double() for name in tensors]).tolist()
            sums.update(zip(tensors, values))
        return StepSums(**sums)


class FollowerRun:
    """The run folder as a worker other than rank 0 sees it: it reads (config, checkpoints) and
    leaves every write to rank 0."""

    def __init__(self, run: RunDir):
        self._run = run

    def __getattr__(self, name):
        return getattr(self._run, name)

    def update_status(self, **fields) -> None:
        pass

    def replace_status(self, status: dict) -> None:
        pass

    def append_metrics(self, record: dict) -> None:
        pass

    def truncate_after(self, step: int) -> int:
        return 0

    def start_heartbeat(self) -> threading.Event:
        return threading.Event()

    def close(self) -> None:
        pass


def accumulation(cfg: Config, workers: int) -> int:
    """Micro-batch rounds per optimizer step: global batch / (workers x micro-batch)."""
    per_round = workers * cfg.train.micro_batch
    if cfg.train.global_batch % per_round:
        raise UserError(
            f"train.global_batch ({cfg.train.global_batch}) does not split into {workers} worker(s) x "
            f"train.micro_batch ({cfg.train.micro_batch}); choose a global batch that is a multiple of "
            f"{per_round}, or another micro-batch."
        )
    return cfg.train.global_batch // per_round


BABYLM_EPOCHS = 10  # the most passes over its 10M or 100M words the BabyLM challenge allows
RELEASE_EVERY = 50  # steps between returning freed heap pages to the OS on CPU


class StopAtOnce(BaseException):
    """A second stop signal: leave now, without the checkpoint the first one asked for."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def default_threads() -> int:
    """CPU threads for train.threads=0: OMP_NUM_THREADS where it is set (a machine shared with other
    jobs), else every core."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


class Trainer:
    def __init__(
        self,
        cfg: Config,
        run: RunDir,
        device: torch.device,
        resume: bool,
        log: Callable[[str], None] = print,
        progress: Callable[[int, int], None] | None = None,
        overrides: list[str] | None = None,
        group: Group | Alone | None = None,
    ):
        self.cfg, self.run, self.device, self.resume = cfg, run, device, resume
        self.group = group or Alone()
        self.world = self.group.world
        self.overrides = list(overrides or [])  # --set given with --resume: written once the resume holds
        self.resumed_from = None  # the checkpoint resumed from: rotation never deletes it
        # Until the checkpoint has loaded a refusal puts status.json back as it was, and until the
        # next checkpoint a failure puts config.yaml back.
        self.status_before: dict = {}
        self.config_before: str | None = None
        self.resumed_step: int | None = None  # set once the checkpoint has loaded
        self.started_ns = time.time_ns()
        self.log = log
        self.progress = progress or (lambda step, total: None)
        self.stop_reason: str | None = (
            None  # why the run ends early (all workers agreed): a signal or a request
        )
        self.stop_signum: int | None = None  # a stop signal this worker received
        self.step = 0
        self.tokens = 0
        self.words = 0  # words of the training text consumed so far
        self.milestones = parse_milestones(cfg.train.save_at_words)  # still to reach, ascending
        self.skipped = 0
        self.elapsed_before = 0.0
        self._t0 = time.perf_counter()
        self.last_saved: int | None = None
        self.compile_tried = False
        self.unchecked: list = []  # (step, finite flag on the device) not yet looked at

    @property
    def accepted(self) -> bool:
        """A fresh start, or a resume whose checkpoint has loaded."""
        return not self.resume or self.resumed_step is not None

    # ------------------------------------------------------------ setup

    def _setup(self) -> None:
        cfg, device = self.cfg, self.device
        if device.type == "cpu":
            torch.set_num_threads(cfg.train.threads or default_threads())
        elif cfg.train.tf32:  # fp32 matmuls on tensor cores; bf16 autocast covers the rest
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        tune_allocator()
        with self.group.local_first():  # one worker per node fills the data cache, the others read it
            self.data: PreparedData = prepare_data(cfg.data, log=self.log)
        spare = check_vocab(self.data.tokenizer, cfg.data.vocab_size, self.data.tokenizer_path)
        produced = cfg.data.vocab_size - spare
        if cfg.data.vocab_size > 2 * produced:  # most of the embedding and head would be dead weight
            raise UserError(
                f"data.vocab_size is {cfg.data.vocab_size:,} but this corpus gives a tokenizer of only "
                f"{produced:,} ids, so {spare:,} embedding rows would never be used; "
                f"set data.vocab_size={produced}."
            )
        if spare:  # the extra rows are never an input: wasted parameters
            self.log(
                f"warning: data.vocab_size is {cfg.data.vocab_size:,} but this corpus gives a tokenizer of "
                f"{produced:,} ids; set data.vocab_size={produced} to drop the unused embedding rows"
            )
        self._copy_data_files()
        self.accum = accumulation(cfg, self.world.size)
        self.log(
            f"batch: {cfg.train.global_batch:,} sequences a step = {self.world.size} worker(s) x micro-batch "
            f"{cfg.train.micro_batch} x {self.accum} accumulation"
        )
        # The stream serves whole global batches, the same on every worker, so the order of samples does
        # not depend on how many workers share them; each worker trains on its own rows of each.
        self.stream = BatchStream(
            self.data.train, cfg.train.global_batch, cfg.seed, words=self.data.train_words
        )
        self.plan = plan_steps(cfg, self.stream.batches_per_epoch, self.stream.batches_for_words)
        epochs = self.plan.total_steps / self.plan.steps_per_epoch
        if epochs > BABYLM_EPOCHS:
            self.log(
                f"warning: this run reads {epochs:.3f} epochs of its corpus, more than the {BABYLM_EPOCHS} "
                "the BabyLM rules allow"
            )

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg).to(device)
        self.stepper = (
            self._forward_model()
        )  # what the training step calls: the model, wrapped by DDP or compiled
        if self.world.rank:  # dropout differs between workers; rank 0 keeps a one-process run's stream
            torch.manual_seed(cfg.seed + 1_000_003 * self.world.rank)
        self.optimizer = build_optimizer(self.model, cfg.train)
        # Rank 0 alone evaluates and saves, so it alone keeps the EMA.
        self.ema = EMA(self.model, cfg.train.ema) if cfg.train.ema > 0 and self.world.main else None
        self.schedule = build_schedule(cfg.schedule)
        scores = None
        if needs_scores(cfg.masking.kind):  # the registered kind reads the corpus frequency scores
            scores = frequency_scores(
                masking_counts(self.data, cfg.masking.statistics)
            )  # masks are drawn on the host
        self.masker = Masker(
            cfg.masking.kind,
            scores,
            cfg.masking.p_freq,
            cfg.masking.curriculum,
            statistics=cfg.masking.statistics,
        )
        self.noise = torch.Generator().manual_seed(cfg.seed + 1)  # on the host, as the forward process
        # On CUDA a step never waits for the device; a non-finite loss is then caught at the next logging
        # interval or save, which is before anything trained on it is written. Skipping needs each step.
        self.check_every_step = device.type != "cuda" or cfg.objective.on_nonfinite == "skip"
        self.monitor = SystemMonitor(use_gpu=device.type == "cuda")
        self.autocast = self._autocast_context()
        self.probes = (
            Probes(cfg, self.run, self.data.tokenizer, device, self.log) if self.world.main else None
        )
        self.control = ControlReader(self.run.path, since_ns=self.started_ns)
        if self.resume:
            self._restore()
            self._record_overrides()

    def _record_overrides(self) -> None:
        """config.yaml changes only now that the checkpoint has loaded: a refused or failed resume leaves
        it as it was. Each accepted change is kept in config-history.jsonl."""
        if not self.overrides or not self.world.main:
            return
        self.config_before = self.run.config_path.read_text()
        atomic_write_text(self.run.config_path, to_yaml(self.cfg))
        with open(self.run.path / "config-history.jsonl", "a") as history:
            history.write(json.dumps({"time": time.time(), "step": self.step, "set": self.overrides}) + "\n")
        self.log(f"config.yaml updated: {', '.join(self.overrides)} from step {self.step}")

    def undo_unused_overrides(self) -> None:
        """After a failure: --set values that no checkpoint was trained with are taken back, so that a
        plain --resume runs as before them (say, after a learning rate that diverged at once)."""
        if self.config_before is None or self.last_saved != self.resumed_step:
            return
        with contextlib.suppress(OSError):  # the folder may be what failed
            atomic_write_text(self.run.config_path, self.config_before)
            with open(self.run.path / "config-history.jsonl", "a") as history:
                record = {"time": time.time(), "step": self.resumed_step, "undone": self.overrides}
                history.write(json.dumps(record) + "\n")
            self.log(
                f"config.yaml restored: {', '.join(self.overrides)} not kept, as the run failed before "
                "its next checkpoint"
            )

    def _autocast_context(self):
        precision = self.cfg.train.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision == "bf16":
            if self.device.type == "cpu":
                self.log("warning: bf16 on CPU is much slower than fp32 on most processors")
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext

    def _copy_data_files(self, checked: bool = False) -> None:
        # A resume copies only once _restore has matched the tokenizer to the checkpoint, so a refused
        # resume leaves the run's own tokenizer.json in place.
        if (self.resume and not checked) or not self.world.main:
            return
        try:
            shutil.copyfile(self.data.tokenizer_path, self.run.path / "tokenizer.json")
            # the frequency table this run's masking reads (masking.statistics), for anyone checking q
            counts = masking_counts(self.data, self.cfg.masking.statistics)
            np.save(self.run.path / "token_counts.npy", counts)
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
            raise UserError(
                f"Cannot write the tokenizer into the run folder {self.run.path} ({reason}); "
                "free some space or fix its permissions."
            ) from None

    def _restore(self) -> None:
        where, state, ema_state = ckpt.load_latest(
            self.run.checkpoints_dir,
            self.model,
            self.optimizer,
            self.device,
            warn=lambda m: self.log(f"warning: {m}"),
        )
        # The data's tokenizer trains on; the run's own copy is what eval and sample will read.
        for tokenizer in (self.data.tokenizer_path, self.run.path / "tokenizer.json"):
            if tokenizer.is_file() and not ckpt.tokenizer_matches(where, tokenizer):
                raise UserError(
                    f"{tokenizer} is not the tokenizer {where.name} was trained with (its sha256 differs "
                    "from the one in meta.json): resume with the run's own data and tokenizer.json."
                )
        self.resumed_from = where  # kept by every later rotation: the last checkpoint known good
        self._copy_data_files(checked=True)
        if self.ema is not None and ema_state is not None:
            self.ema.load_state_dict(ema_state)
        self.step, self.tokens, self.skipped = state["step"], state["tokens"], state["skipped"]
        self.elapsed_before = state["elapsed"]
        self.stream.load_state_dict(state["stream"])
        self.words = state.get("words")
        if self.words is None:  # saved before words were counted: the data position gives them exactly
            self.words = self.stream.words_before(self.stream.epoch, self.stream.index)
            self.log(
                f"{where.name} predates counting words: {self.words:,} words seen, counted from its "
                "data position"
            )
        passed = [m for m in self.milestones if m <= self.words]
        missing = [
            milestone_name(m) for m in passed if not (self.run.checkpoints_dir / milestone_name(m)).is_dir()
        ]
        if missing:
            self.log(
                f"warning: {', '.join(missing)} passed before this resume without a checkpoint; "
                "they are not written"
            )
        self.milestones = [m for m in self.milestones if m > self.words]
        self._restore_rng(state, where.name)
        self.last_saved = self.resumed_step = self.step
        dropped = self.run.truncate_after(self.step)
        extra = f"; dropped {dropped} metric lines written after it" if dropped else ""
        self.log(f"resumed from step {self.step} ({where.name}){extra}")

    def _rng_state(self) -> dict:
        return {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def _restore_rng(self, state: dict, name: str) -> None:
        """Each worker's own streams where the worker count and micro-batch are unchanged (an exact
        continuation); otherwise the data position still holds, but the noise is drawn in other groups."""
        ranks = state.get("rng_ranks")
        saved_world, saved_micro = (
            state.get("world_size", 1),
            state.get("micro_batch", self.cfg.train.micro_batch),
        )
        if ranks and saved_world == self.world.size:
            torch.set_rng_state(ranks[self.world.rank]["cpu"])
            if self.device.type == "cuda" and ranks[self.world.rank]["cuda"] is not None:
                torch.cuda.set_rng_state(ranks[self.world.rank]["cuda"], self.device)
        elif self.world.main:
            torch.set_rng_state(state["rng_cpu"])
            if self.device.type == "cuda" and state.get("rng_cuda") is not None and not self.world.several:
                torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.noise.set_state(state["rng_noise"])
        if (saved_world, saved_micro) != (self.world.size, self.cfg.train.micro_batch):
            self.log(
                f"warning: {name} was trained by {saved_world} worker(s) with micro-batch {saved_micro}, "
                f"this run has {self.world.size} with {self.cfg.train.micro_batch}: it continues from the "
                "same global sample position, but the noise and dropout random streams differ from an "
                "uninterrupted run"
            )

    # ------------------------------------------------------------ checkpoints

    def save(self, milestone: str | None = None) -> None:
        """Every worker calls this at the same step; rank 0 writes, with each worker's dropout RNG."""
        self._check_finite()
        rng_ranks = self.group.gather(self._rng_state()) if self.world.several else None
        if not self.world.main:
            if milestone is None:
                self.last_saved = self.step
            return
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "words": self.words,
            "skipped": self.skipped,
            "elapsed": self._elapsed(),
            "stream": self.stream.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all()
            if self.device.type == "cuda" and not rng_ranks
            else None,
            "rng_noise": self.noise.get_state(),
            "total_steps": self.plan.total_steps,
            "world_size": self.world.size,
            "micro_batch": self.cfg.train.micro_batch,
            "rng_ranks": rng_ranks,
        }
        ema_state = self.ema.state_dict() if self.ema is not None else None
        path = ckpt.save_checkpoint(
            self.run.checkpoints_dir,
            self.step,
            self.model,
            ema_state,
            self.optimizer,
            state,
            self.cfg.train.keep_checkpoints,
            tokenizer=self.data.tokenizer_path,
            protect=self.resumed_from,
            milestone=milestone,
            info={"words": self.words},
        )
        if milestone is None:
            self.last_saved = self.step
            self.run.update_status(checkpoint=path.name)

    def _save_milestones(self) -> None:
        """A checkpoint for each milestone this step reached (several when one step passes several)."""
        while self.milestones and self.milestones[0] <= self.words:
            name = milestone_name(self.milestones.pop(0))
            self.save(milestone=name)
            self.log(f"step {self.step} | {self.words:,} words | milestone checkpoint {name}")

    # ------------------------------------------------------------ one step

    def _forward_model(self, compiled: bool | None = None) -> torch.nn.Module:
        model = self.model
        if self.cfg.train.compile if compiled is None else compiled:
            model = torch.compile(model)
        if (
            self.world.several
        ):  # gradients averaged over workers by DDP's all-reduce, overlapped with backward
            model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        return model

    def _train_step(self) -> StepSums:
        if not self.compile_tried:
            self.compile_tried = True
            if self.cfg.train.compile:
                return self._first_compiled_step()
        return self._step()

    def _first_compiled_step(self) -> StepSums:
        """torch.compile fails, if at all, on its first call: the step is then taken again without it,
        from the same data position and noise."""
        noise, position = self.noise.get_state(), self.stream.state_dict()
        try:
            return self._step()
        except (UserError, TrainingFailed):
            raise
        except Exception as e:  # no C++ compiler, an op the compiler cannot take, a backend error
            reason = _first_line(e)[:200]
            self.log(f"warning: train.compile failed ({reason}); training continues without compiling")
            self.optimizer.zero_grad(set_to_none=True)
            self.noise.set_state(noise)
            self.stream.load_state_dict(position)
            self.stepper = self._forward_model(compiled=False)
            return self._step()

    def _step(self) -> StepSums:
        """One optimizer step on a global batch: this worker's rows of each of `accum` micro-batch rounds.
        Returns what it adds to the logging interval."""
        cfg, rank, workers = self.cfg, self.world.rank, self.world.size
        micro, accum = cfg.train.micro_batch, self.accum
        per_round = workers * micro
        self.model.train()
        progress = self.step / self.plan.total_steps
        epoch = self.stream.epoch
        batch = self.stream.next()  # [global_batch, L] on the CPU, the same on every worker
        loss_sum = torch.zeros((), device=self.device)
        ce_sum = torch.zeros((), device=self.device)
        masked = maskable = tokens = 0
        rate_sum = 0.0
        for round_ in range(accum):
            shared = batch[round_ * per_round : (round_ + 1) * per_round]
            normaliser = int((shared != PAD_ID).sum())
            # The forward process runs on the host, where its counts are known without waiting for
            # the device; the noised batch then goes over in non-blocking copies.
            noised = noise_batch(
                shared[rank * micro : (rank + 1) * micro],
                schedule=self.schedule,
                masker=self.masker,
                power=cfg.schedule.power,
                progress=progress,
                epoch=epoch,
                total_epochs=self.plan.total_epochs,
                generator=self.noise,
                rows=(rank * micro, per_round),
            ).to_device(self.device)
            # Gradients are all-reduced once a step, on the last round's backward.
            sync = self.stepper.no_sync() if workers > 1 and round_ < accum - 1 else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    out = noised_loss(self.stepper, noised, cfg.objective.subs, normaliser)
                # DDP averages over workers, and the workers' losses add up to the round's: x workers
                (out.loss * (workers / accum)).backward()
            loss_sum += out.loss.detach()
            ce_sum += out.masked_ce * out.n_masked
            masked += out.n_masked
            maskable += out.n_maskable
            rate_sum += out.schedule_rate * micro
            tokens += normaliser
        if cfg.train.clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm(
                [p.grad for p in self.model.parameters() if p.grad is not None]
            )
        # As released, the n-th update (from 0) takes the schedule's lr at n, so the first is 0 under
        # warm-up; train.first_lr_zero=false shifts by one so that every update moves the weights.
        lr_step = self.step if cfg.train.first_lr_zero else self.step + 1
        lr = cfg.train.lr * lr_multiplier(
            lr_step, self.plan.total_steps, cfg.train.warmup, cfg.train.cooldown, cfg.train.min_lr_ratio
        )
        loss, ce, gnorm = loss_sum / accum, ce_sum, grad_norm.float()
        if self.check_every_step:
            loss, ce, gnorm = torch.stack([loss, ce, gnorm]).tolist()
            # The gradient norm is the same on every worker after the all-reduce (a non-finite loss on
            # any worker makes it non-finite), so all decide alike; this worker's loss is its share.
            finite = math.isfinite(gnorm) and (workers > 1 or math.isfinite(loss))
        else:  # checked at the next logging interval or save, before anything is written (_check_finite)
            self.unchecked.append((self.step + 1, torch.isfinite(torch.stack([loss, gnorm])).all()))
            finite = True
        if finite:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        else:
            self._nonfinite(loss, gnorm)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += tokens
        self.words += self.stream.last_words
        return StepSums(
            loss=loss,
            ce_sum=ce,
            masked=masked,
            maskable=maskable,
            rate_sum=rate_sum,
            rows=micro * accum,
            grad_norm=gnorm,
            tokens=tokens,
        )

    def _check_finite(self) -> None:
        """The deferred check of the steps since the last one (one wait for the device): a non-finite
        loss or gradient ends the run before anything trained on it is logged or saved."""
        if not self.unchecked:
            return
        steps, flags = zip(*self.unchecked)
        self.unchecked = []
        good = torch.stack(flags).tolist()
        if not all(good):
            step = steps[good.index(False)]
            last = (
                f" the last good checkpoint is step-{self.last_saved};" if self.last_saved is not None else ""
            )
            raise TrainingFailed(
                f"Step {step} gave a non-finite loss or gradient norm:{last} lower train.lr, or "
                "set objective.on_nonfinite=skip to skip such steps."
            )

    def _nonfinite(self, loss: float, gnorm: float) -> None:
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {gnorm}"
        last = self.last_saved
        if self.cfg.objective.on_nonfinite == "skip":
            self.skipped += 1
            self.log(f"warning: step {self.step + 1}: {what}; update skipped ({self.skipped} so far)")
            if self.skipped <= self.cfg.objective.max_skipped:
                return
            raise TrainingFailed(
                f"{self.skipped} steps had a non-finite loss or gradient (more than objective.max_skipped = "
                f"{self.cfg.objective.max_skipped}); training diverged."
            )
        saved = f" the last good checkpoint is step-{last};" if last is not None else ""
        raise TrainingFailed(
            f"Step {self.step + 1} gave a non-finite {what}:{saved} lower train.lr, or set "
            "objective.on_nonfinite=skip to skip such steps."
        )

    # ------------------------------------------------------------ dev loss

    @contextlib.contextmanager
    def inference(self, weights: str = "ema"):
        """EMA (or raw) weights, eval mode, no grad, the run's precision; training state restored after."""
        swap = (
            self.ema.swapped(self.model)
            if weights == "ema" and self.ema is not None
            else contextlib.nullcontext()
        )
        self.model.eval()
        try:
            with swap, torch.no_grad(), self.autocast():
                yield
        finally:
            self.model.train()

    def dev_loss(self) -> dict | None:
        cfg = self.cfg
        n = min(len(self.data.dev), cfg.train.dev_batches * cfg.train.micro_batch)
        if n == 0:
            return None
        generator = torch.Generator().manual_seed(cfg.seed + 7919)  # the same masks every time, on any device

        def noise(ids: torch.Tensor) -> NoisedBatch:  # the training objective's, on the host as in a step
            return noise_batch(
                ids,
                schedule=self.schedule,
                masker=self.masker,
                power=cfg.schedule.power,
                progress=self.step / self.plan.total_steps,
                epoch=self.stream.epoch,
                total_epochs=self.plan.total_epochs,
                generator=generator,
            ).to_device(self.device)

        with self.inference("ema"):
            sums = dev_sums(self.model, self.data.dev[:n], cfg.train.micro_batch, noise, cfg.objective.subs)
        return {
            "dev_loss": sums.weighted_ce / max(sums.tokens, 1),
            "dev_masked_ce": sums.masked_ce / max(sums.masked, 1),
            "dev_weights": "ema" if self.ema is not None else "raw",
            "dev_sequences": n,
        }

    # ------------------------------------------------------------ the loop

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._t0)

    def _handle_signal(self, signum, frame) -> None:
        if self.stop_signum is not None:
            raise StopAtOnce(signum)  # `latest` still names a whole checkpoint
        self.stop_signum = signum  # acted on at the end of this step, by every worker together
        self.log(
            f"{signal.Signals(signum).name} received: saving a checkpoint and stopping after this step "
            "(send it again to stop at once)"
        )

    def _launcher_gone(self, signum, frame) -> None:
        """The launcher died (Linux repeats this signal as its threads end): stop once, after a checkpoint."""
        if self.stop_signum is None:
            self._handle_signal(signum, frame)

    def _log_interval(self, iv: _Interval) -> None:
        cfg, plan = self.cfg, self.plan
        self._check_finite()
        sums = iv.on_host()
        totals = self.group.total([getattr(sums, name) for name in WORKER_SUMS])
        run = dataclasses.replace(sums, **dict(zip(WORKER_SUMS, totals)))  # every worker's rows
        if not self.world.main:
            return
        seconds = time.perf_counter() - iv.start
        n = max(iv.steps, 1)
        record = {
            "event": "train",
            "step": self.step,
            "epoch": round(self.step / plan.steps_per_epoch, 4),
            "tokens": self.tokens,
            "words": self.words,
            "loss": run.loss / n,
            "masked_ce": run.ce_sum / max(run.masked, 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": sums.grad_norm / n,
            "tokens_per_s": sums.tokens / max(seconds, 1e-9),
            "world_size": self.world.size,
            "mask_rate": run.masked / max(run.maskable, 1),
            "schedule_rate": run.rate_sum / max(run.rows, 1),
            "p_freq": curriculum_power(
                cfg.masking.p_freq, self.stream.epoch, plan.total_epochs, cfg.masking.curriculum
            )
            if needs_scores(cfg.masking.kind)
            else None,
            "skipped": self.skipped,
            "time": time.time(),
            "elapsed": self._elapsed(),
            "sys": self.monitor.sample(),
        }
        self.run.append_metrics(record)
        eta = (plan.total_steps - self.step) * seconds / n
        self.run.update_status(
            step=self.step, tokens=self.tokens, words=self.words, loss=record["loss"], eta_s=eta
        )
        self.log(
            f"step {self.step}/{plan.total_steps} | epoch {record['epoch']:.2f} | "
            f"loss {record['loss']:.4f} | masked CE {record['masked_ce']:.4f} | lr {record['lr']:.2e} | "
            f"{record['tokens_per_s']:,.0f} tok/s | mask {record['mask_rate']:.3f} "
            f"(schedule {record['schedule_rate']:.3f}) | eta {_fmt_duration(eta)}"
        )

    def _log_dev(self) -> None:
        result = self.dev_loss()
        if result is None:
            return
        self.run.append_metrics({"event": "dev", "step": self.step, **result, "time": time.time()})
        self.run.update_status(dev_loss=result["dev_loss"])
        self.log(
            f"step {self.step} | dev loss {result['dev_loss']:.4f} | "
            f"dev masked CE {result['dev_masked_ce']:.4f} ({result['dev_weights']} weights)"
        )

    def train(self) -> str:
        """Run to the end of the budget or a stop signal; returns the final state."""
        # Handlers first: a signal during data preparation also ends the run cleanly.
        previous = {
            signal.SIGINT: signal.signal(signal.SIGINT, self._handle_signal),
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._handle_signal),
        }
        if launched_worker():
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._launcher_gone)
            stop_with_launcher(signal.SIGHUP)
        try:
            return self._train()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _agreed_command(self) -> str | None:
        """The command every worker acts on now: rank 0 reads control.json, each worker its own signals;
        a stop on one is a stop on all."""
        command = self.control.poll() if self.world.main else None
        stop, pause, checkpoint, resume = self.group.agree(
            [
                self.stop_signum is not None or command == "stop",
                command == "pause",
                command == "checkpoint",
                command == "resume",
            ]
        )
        if stop:
            if self.stop_reason is None:
                self.stop_reason = (
                    signal.Signals(self.stop_signum).name
                    if self.stop_signum is not None
                    else "stop request"
                    if command == "stop"
                    else "a signal to another worker"
                )
            return "stop"
        return "pause" if pause else "checkpoint" if checkpoint else "resume" if resume else None

    def _obey(self, command: str | None) -> None:
        """Act on an agreed command; a pause waits here, heartbeat still beating."""
        if command == "checkpoint" and self.last_saved != self.step:
            self.save()
            self.log(f"step {self.step} | checkpoint saved on request")
        elif command == "pause":
            self.run.update_status(state="paused", step=self.step)
            self.log(f"step {self.step} | paused; resume from the TUI or with the control file")
            paused_at = time.perf_counter()
            while (command := self._agreed_command()) not in ("resume", "stop"):
                if command == "checkpoint":
                    self._obey(command)
                time.sleep(0.2)
            self._t0 += time.perf_counter() - paused_at  # paused time is not training time
            self.interval.start += time.perf_counter() - paused_at  # nor part of the interval's tokens/s
            self.run.update_status(state="running")
            self.log(f"step {self.step} | {'resumed' if command == 'resume' else 'stopping'}")

    def _train(self) -> str:
        cfg = self.cfg
        if self.resume:
            self.status_before = self.run.read_status()
        self.run.update_status(state="starting", step=self.step, message="preparing data", error=None)
        self._setup()
        plan = self.plan
        self.log(
            f"model: {sum(p.numel() for p in self.model.parameters()):,} parameters on {self.device}; "
            f"{plan.total_steps:,} steps ({plan.total_epochs} epoch(s), "
            f"{plan.steps_per_epoch:,.1f} steps an epoch)"
        )
        self.run.update_status(
            state="running",
            total_steps=plan.total_steps,
            step=self.step,
            message="",
            world_size=self.world.size,
        )
        self._t0 = time.perf_counter()
        self.interval = _Interval()
        self._obey(self._agreed_command())  # a stop sent while the data was being prepared
        while self.step < plan.total_steps and self.stop_reason is None:
            self.interval.add(self._train_step())
            self.progress(self.step, plan.total_steps)
            if self.step % cfg.train.log_every == 0 or self.step == plan.total_steps:
                self._log_interval(self.interval)
                self.interval = _Interval()
            dev, evaluate, sample = (
                bool(every) and self.step % every == 0
                for every in (cfg.train.dev_every, cfg.eval.every, cfg.samples.every)
            )
            if dev or evaluate or sample:  # only then: a check waits for the device
                self._check_finite()  # what is evaluated or sampled comes from finite steps
            if dev and self.world.main:
                self._log_dev()
            if evaluate and self.world.main:
                with self.inference(cfg.eval.weights):
                    self.probes.evaluate(self.model, self.step)
            if sample and self.world.main:
                with self.inference("ema"):
                    self.probes.sample(self.model, self.step)
            self._save_milestones()
            if self.step % cfg.train.checkpoint_every == 0:
                self.save()
            if self.device.type == "cpu" and self.step % RELEASE_EVERY == 0:
                release_free_memory()  # keeps RSS flat; see core/allocator.py
            self._obey(self._agreed_command())
        if self.stop_reason is not None:
            self.run.update_status(state="stopping", step=self.step)
        if self.last_saved != self.step:
            self.save()
        state = "stopped" if self.stop_reason else "finished"
        self.run.update_status(
            state=state,
            step=self.step,
            tokens=self.tokens,
            words=self.words,
            elapsed_s=self._elapsed(),
            message=f"stopped by {self.stop_reason}" if self.stop_reason else "",
        )
        self.log(
            f"{state} at step {self.step} after {_fmt_duration(self._elapsed())}; "
            f"checkpoint {self.run.checkpoints_dir / ('step-%d' % self.step)}"
        )
        return state


def _prepare_folder(cfg: Config, run: RunDir, resume: bool, log: Callable[[str], None]) -> bool:
    """Check the run folder and create it; returns whether to resume. A run that ended before its first
    checkpoint (a bad path, a kill in the first steps) holds nothing to keep: it starts afresh in place."""
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"--run-dir {run.path} is a file, not a folder; give a folder for the run.")
    status = run.read_status() if run.is_run() else {}
    if trainer_alive(status):
        pid, host = status.get("pid"), status.get("host") or "another host"
        watch = f"watch it with `mdlm-tui watch {run.path}` or choose another --run-dir."
        if host == socket.gethostname():
            raise UserError(
                f"{run.path} is still being trained by process {pid}; stop it (kill {pid}), {watch}"
            )
        raise UserError(f"{run.path} is still being trained on {host} (its heartbeat is fresh); {watch}")
    if resume and (run.path / IMPORTED_MARKER).is_file():
        raise UserError(
            f"{run.path} holds imported weights without optimizer state or data position: "
            "evaluate and sample it, or start a new run to train."
        )
    has_checkpoint = bool(ckpt.step_dirs(run.checkpoints_dir)) if run.is_run() else False
    state = status.get("state")
    # Only a folder a trainer wrote (its status says how it ended) is cleared; a config.yaml alone
    # may be someone's own file.
    if state is not None and not has_checkpoint:
        how = {"failed": "failed", "stopped": "was stopped"}.get(state, "ended")
        log(f"{run.path}: its earlier attempt {how} before any checkpoint; starting it afresh in place")
        run.clear()
        resume = False
    elif not resume and run.is_run():
        raise UserError(
            f"{run.path} already holds a run; continue it with --resume or choose another --run-dir."
        )
    if not resume:
        run.create(to_yaml(cfg))
    return resume


def config_summary(cfg: Config, config_path) -> str:
    """One line for the console; the full config is config.yaml (and `mdlm-tui inspect`)."""
    m, s = cfg.model, cfg.schedule
    masking = f"{cfg.masking.kind} masking"
    if needs_scores(cfg.masking.kind):
        masking += f" (p_freq {cfg.masking.p_freq:g}{', curriculum' if cfg.masking.curriculum else ''})"
    return (
        f"config: {cfg.name} preset, {s.name} schedule (p={s.power:g}), {masking}, {m.num_layers} layers x "
        f"{m.hidden_size} ({m.num_heads} heads), budget {cfg.train.budget}; in full: {config_path}"
    )


def _first_line(e: BaseException) -> str:
    """An exception's first line, or its type's name when it has no message."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _lost_worker(e: BaseException) -> bool:
    """A collective failed because another worker ended or its connection broke."""
    text = str(e)
    return isinstance(e, torch.distributed.DistError) or (
        isinstance(e, RuntimeError)
        and any(word in text for word in ("gloo", "NCCL", "Connection", "connection"))
    )


def _main_worker_gone(run: RunDir | FollowerRun) -> bool:
    """Rank 0 of this run, on this host, ended without writing how (its pid is gone or a zombie),
    while status.json still says it trains."""
    status = run.read_status()
    if status.get("state") not in ACTIVE_STATES or status.get("host") != socket.gethostname():
        return False
    try:
        return psutil.Process(status["pid"]).status() == psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, TypeError, ValueError):
        return True


def start(
    cfg: Config,
    run: RunDir,
    device_name: str,
    resume: bool,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
    overrides: list[str] | None = None,
    world: World | None = None,
) -> Trainer:
    """Create or reopen the run directory, train, and keep status.json true whatever happens.
    Returns the trainer: its `stop_reason` says whether a signal or a stop request ended it early.

    With several workers (`world`), each calls this; rank 0 owns the folder and the console, the
    others train their rows, read what rank 0 wrote and say nothing unless something fails."""
    world = world or World()
    device = resolve_device(worker_device(world, device_name))
    # Before anything is written: a corpus that cannot be found, or a model too big for the device,
    # is one sentence (the corpus first: it is what a preset without data.path needs).
    find_corpus(cfg.data)
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    check_fits(cfg, device, bf16=bf16)
    accumulation(cfg, world.size)  # a global batch that does not split is refused before the folder is made
    group = join(world, device)
    if not world.main:
        log, progress, run = (lambda line: None), None, FollowerRun(run)
    try:
        if world.main:
            try:
                resume = _prepare_folder(cfg, run, resume, log)
            except OSError as e:
                raise UserError(
                    f"Cannot write the run folder {run.path} ({e.strerror or e}); "
                    "choose a writable --run-dir."
                ) from None
        try:
            resume = group.from_main(resume)  # rank 0 may have found a failed start to begin afresh
        except Exception as e:
            if world.main or not _lost_worker(e):
                raise
            # Rank 0 refused to start and says why; ending quietly (0) leaves its code to the launcher,
            # which would otherwise stop rank 0 mid-sentence on this worker's failure.
            raise SystemExit(0) from None
        log(config_summary(cfg, run.config_path))
        return _train(Trainer(cfg, run, device, resume, log, progress, overrides, group), run, world, log)
    finally:
        group.close()


def _train(trainer: Trainer, run: RunDir | FollowerRun, world: World, log: Callable[[str], None]) -> Trainer:
    heartbeat = run.start_heartbeat()

    def last_word(**fields) -> None:
        """The final status. A follower writes it only when rank 0 is gone on this host without saying
        how it ended (killed), so that status.json never claims a dead run is training."""
        if not world.main and not _main_worker_gone(run):
            return
        with contextlib.suppress(
            OSError
        ):  # status.json may itself be unwritable (a read-only or deleted folder)
            RunDir(run.path).update_status(**fields)

    try:
        trainer.train()
        return trainer
    except (UserError, TrainingFailed) as e:
        if not trainer.accepted and trainer.status_before:
            # A refused resume changes nothing: the run still reads as it ended, at its own step.
            with contextlib.suppress(OSError):
                run.replace_status(trainer.status_before)
        else:
            last_word(state="failed", error=str(e), step=trainer.step)
            trainer.undo_unused_overrides()
        raise
    except StopAtOnce as e:
        trainer.stop_signum = e.signum
        step = trainer.last_saved or 0
        name = signal.Signals(e.signum).name
        last_word(
            state="stopped",
            step=step,
            message=f"stopped at once by a second {name}; resumes from step {step}",
        )
        log(f"stopped at once by a second {name}; --resume continues from step {step}")
        return trainer
    except KeyboardInterrupt:
        last_word(state="stopped", step=trainer.last_saved or 0, message="interrupted")
        raise
    except OSError as e:
        reason = (
            f"Cannot write the run folder {run.path} ({e.strerror or e}); it was made read-only, filled up "
            "or removed."
        )
        last_word(state="failed", error=reason, step=trainer.step)
        raise UserError(reason) from None
    except BaseException as e:
        if world.several and _lost_worker(e):
            # gloo's "[file:line] " prefix off, the first sentence kept
            first = re.sub(r"^\[[^\]]*\]\s*", "", _first_line(e)).split(". ")[0][:160]
            reason = (
                f"Worker {world.rank} lost the other workers of this run at step {trainer.step} ({first}); "
                f"one of them ended or lost its connection: continue with --resume from step "
                f"{trainer.last_saved or 0}."
            )
            last_word(state="failed", error=reason, step=trainer.step)
            if not world.main:  # the worker that ended is the one to report (it, the launcher or torchrun)
                raise SystemExit(0) from None
            raise TrainingFailed(reason) from None
        last_word(state="failed", error=f"{type(e).__name__}: {e}", step=trainer.step)
        raise
    finally:
        heartbeat.set()
        with contextlib.suppress(OSError):
            run.close()
