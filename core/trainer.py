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
import json
import math
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core import checkpoint as ckpt
from core.config import Config, milestone_name, parse_budget, parse_milestones, to_yaml
from core.control import ControlReader
from core.corpus import find_corpus
from core.dataset import BatchStream, PreparedData, masking_counts, prepare_data
from core.errors import TrainingFailed, UserError
from core.masking import Masker, curriculum_power, frequency_scores
from core.allocator import release_free_memory, tune_allocator
from core.memory import check_fits
from core.model import build_model
from core.objective import diffusion_loss
from core.optim import EMA, build_optimizer, lr_multiplier
from core.probes import Probes
from core.runs import ACTIVE_STATES, IMPORTED_MARKER, RunDir, atomic_write_text
from core.schedules import build_schedule
from core.telemetry import SystemMonitor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was asked for, but PyTorch sees no CUDA GPU on this machine; use --device cpu or auto.")
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name} was asked for, but only {torch.cuda.device_count()} GPU(s) are visible.")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"Unknown device '{name}'; use auto, cpu, cuda or cuda:N.")


@dataclass
class Plan:
    total_steps: int
    total_epochs: int
    steps_per_epoch: float


def plan_steps(cfg: Config, batches_per_epoch: int, batches_for_words: Callable[[float], int] | None = None) -> Plan:
    """Turn the budget ('N steps', 'N tokens', 'N words', 'N epochs') into optimizer steps.
    batches_for_words (BatchStream.batches_for_words) makes a words budget exact: the first step at or
    past N words; without it the words are estimated as nominal tokens."""
    amount, unit = parse_budget(cfg.train.budget)
    accum = cfg.train.grad_accum
    steps_per_epoch = batches_per_epoch / accum
    if unit == "steps":
        total = int(amount)
    elif unit == "words" and batches_for_words is not None:
        total = math.ceil(batches_for_words(amount) / accum)
    elif unit in ("tokens", "words"):  # nominal tokens: sequences x seq_len per optimizer step
        total = math.ceil(amount / (cfg.train.batch_size * accum * cfg.data.seq_len))
    else:
        total = math.ceil(amount * steps_per_epoch)
    total = max(total, 1)
    return Plan(total, max(1, math.ceil(total / steps_per_epoch)), steps_per_epoch)


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class _Interval:
    """Sums over one logging interval."""

    def __init__(self):
        self.steps = self.loss = self.ce = self.mask_rate = self.schedule_rate = self.grad_norm = self.tokens = 0.0
        self.skipped = 0
        self.start = time.perf_counter()

    def add(self, loss, ce, mask_rate, schedule_rate, grad_norm, tokens):
        self.steps += 1
        self.loss += loss
        self.ce += ce
        self.mask_rate += mask_rate
        self.schedule_rate += schedule_rate
        self.grad_norm += grad_norm
        self.tokens += tokens


BABYLM_EPOCHS = 10  # the most passes over its 10M or 100M words the BabyLM challenge allows
RELEASE_EVERY = 50  # steps between returning freed heap pages to the OS on CPU
LIVE_HEARTBEAT_S = 30.0  # a heartbeat older than this means its trainer is gone (as RunDir.live_pid)


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
    def __init__(self, cfg: Config, run: RunDir, device: torch.device, resume: bool,
                 log: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None,
                 overrides: list[str] | None = None):
        self.cfg, self.run, self.device, self.resume = cfg, run, device, resume
        self.overrides = list(overrides or [])  # --set given with --resume: written once the resume holds
        self.resumed_from = None  # the checkpoint resumed from: rotation never deletes it
        self.started_ns = time.time_ns()
        self.log = log
        self.progress = progress or (lambda step, total: None)
        self.stop_reason: str | None = None  # why the run ends early: a signal's name or "stop request"
        self.stop_signum: int | None = None
        self.step = 0
        self.tokens = 0
        self.words = 0  # words of the training text consumed so far
        self.milestones = parse_milestones(cfg.train.save_at_words)  # still to reach, ascending
        self.skipped = 0
        self.elapsed_before = 0.0
        self._t0 = time.perf_counter()
        self.last_saved: int | None = None

    # ------------------------------------------------------------ setup

    def _setup(self) -> None:
        cfg, device = self.cfg, self.device
        if device.type == "cpu":
            torch.set_num_threads(cfg.train.threads or default_threads())
        tune_allocator()
        self.data: PreparedData = prepare_data(cfg.data, log=self.log)
        produced = self.data.tokenizer.get_vocab_size()
        if produced < cfg.data.vocab_size:  # the extra rows are never an input: wasted parameters
            self.log(f"warning: data.vocab_size is {cfg.data.vocab_size:,} but this corpus gives a tokenizer of "
                     f"{produced:,} ids; set data.vocab_size={produced} to drop the unused embedding rows")
        self._copy_data_files()
        self.stream = BatchStream(self.data.train, cfg.train.batch_size, cfg.seed, words=self.data.train_words)
        if self.stream.batches_per_epoch < cfg.train.grad_accum:
            raise UserError(f"The corpus gives {self.stream.batches_per_epoch} batches per epoch, fewer than train.grad_accum ({cfg.train.grad_accum}); lower the batch size or accumulation.")
        self.plan = plan_steps(cfg, self.stream.batches_per_epoch, self.stream.batches_for_words)
        epochs = self.plan.total_steps / self.plan.steps_per_epoch
        if epochs > BABYLM_EPOCHS:
            self.log(f"warning: this run reads {epochs:.3f} epochs of its corpus, more than the {BABYLM_EPOCHS} "
                     "the BabyLM rules allow")

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg).to(device)
        self.optimizer = build_optimizer(self.model, cfg.train)
        self.ema = EMA(self.model, cfg.train.ema) if cfg.train.ema > 0 else None
        self.schedule = build_schedule(cfg.schedule)
        scores = None
        if cfg.masking.kind == "frequency":
            scores = frequency_scores(masking_counts(self.data, cfg.masking.statistics)).to(device)
        self.masker = Masker(cfg.masking.kind, scores, cfg.masking.p_freq, cfg.masking.curriculum,
                             statistics=cfg.masking.statistics)
        self.noise = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.monitor = SystemMonitor(use_gpu=device.type == "cuda")
        self.autocast = self._autocast_context()
        self.probes = Probes(cfg, self.run, self.data.tokenizer, device, self.log)
        self.control = ControlReader(self.run.path, since_ns=self.started_ns)
        if self.resume:
            self._restore()
            self._record_overrides()

    def _record_overrides(self) -> None:
        """config.yaml changes only now that the checkpoint has loaded: a refused or failed resume leaves
        it as it was. Each accepted change is kept in config-history.jsonl."""
        if not self.overrides:
            return
        atomic_write_text(self.run.config_path, to_yaml(self.cfg))
        with open(self.run.path / "config-history.jsonl", "a") as history:
            history.write(json.dumps({"time": time.time(), "step": self.step, "set": self.overrides}) + "\n")
        self.log(f"config.yaml updated: {', '.join(self.overrides)} from step {self.step}")

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
        if self.resume and not checked:
            return
        try:
            shutil.copyfile(self.data.tokenizer_path, self.run.path / "tokenizer.json")
            np.save(self.run.path / "token_counts.npy", self.data.token_counts)
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
            raise UserError(f"Cannot write the tokenizer into the run folder {self.run.path} ({reason}); "
                            "free some space or fix its permissions.") from None

    def _restore(self) -> None:
        where, state, ema_state = ckpt.load_latest(self.run.checkpoints_dir, self.model, self.optimizer,
                                                   self.device, warn=lambda m: self.log(f"warning: {m}"))
        # The data's tokenizer trains on; the run's own copy is what eval and sample will read.
        for tokenizer in (self.data.tokenizer_path, self.run.path / "tokenizer.json"):
            if tokenizer.is_file() and not ckpt.tokenizer_matches(where, tokenizer):
                raise UserError(f"{tokenizer} is not the tokenizer {where.name} was trained with (its sha256 differs "
                                "from the one in meta.json): resume with the run's own data and tokenizer.json.")
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
            self.log(f"{where.name} predates counting words: {self.words:,} words seen, counted from its "
                     "data position")
        passed = [m for m in self.milestones if m <= self.words]
        missing = [milestone_name(m) for m in passed if not (self.run.checkpoints_dir / milestone_name(m)).is_dir()]
        if missing:
            self.log(f"warning: {', '.join(missing)} passed before this resume without a checkpoint; "
                     "they are not written")
        self.milestones = [m for m in self.milestones if m > self.words]
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.noise.set_state(state["rng_noise"])
        self.last_saved = self.step
        dropped = self.run.truncate_after(self.step)
        extra = f"; dropped {dropped} metric lines written after it" if dropped else ""
        self.log(f"resumed from step {self.step} ({where.name}){extra}")

    # ------------------------------------------------------------ checkpoints

    def save(self, milestone: str | None = None) -> None:
        state = {
            "step": self.step, "tokens": self.tokens, "words": self.words, "skipped": self.skipped,
            "elapsed": self._elapsed(),
            "stream": self.stream.state_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "rng_noise": self.noise.get_state(), "total_steps": self.plan.total_steps,
        }
        ema_state = self.ema.state_dict() if self.ema is not None else None
        path = ckpt.save_checkpoint(self.run.checkpoints_dir, self.step, self.model, ema_state,
                                    self.optimizer, state, self.cfg.train.keep_checkpoints,
                                    tokenizer=self.data.tokenizer_path,
                                    protect=self.resumed_from, milestone=milestone, info={"words": self.words})
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

    def _train_step(self) -> tuple[float, float, float, float, float, int]:
        cfg = self.cfg
        self.model.train()
        accum = cfg.train.grad_accum
        progress = self.step / self.plan.total_steps
        loss_sum = torch.zeros((), device=self.device)
        ce_sum, masked, maskable_rate, schedule_rate, tokens = torch.zeros((), device=self.device), 0, 0.0, 0.0, 0
        words = 0
        for _ in range(accum):
            epoch = self.stream.epoch
            ids = self.stream.next().to(self.device, non_blocking=True)
            words += self.stream.last_words
            with self.autocast():
                out = diffusion_loss(self.model, ids, schedule=self.schedule, masker=self.masker,
                                     power=cfg.schedule.power, progress=progress, epoch=epoch,
                                     total_epochs=self.plan.total_epochs, generator=self.noise,
                                     subs=cfg.objective.subs)
            (out.loss / accum).backward()
            loss_sum += out.loss.detach()
            ce_sum += out.masked_ce * out.n_masked
            masked += out.n_masked
            maskable_rate += out.mask_rate / accum
            schedule_rate += out.schedule_rate / accum
            tokens += out.n_tokens
        if cfg.train.clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        loss, ce, gnorm = torch.stack([loss_sum / accum, ce_sum / max(masked, 1), grad_norm.float()]).tolist()
        # As released, the n-th update (from 0) takes the schedule's lr at n, so the first is 0 under
        # warm-up; train.first_lr_zero=false shifts by one so that every update moves the weights.
        lr_step = self.step if cfg.train.first_lr_zero else self.step + 1
        lr = cfg.train.lr * lr_multiplier(lr_step, self.plan.total_steps, cfg.train.warmup,
                                          cfg.train.cooldown, cfg.train.min_lr_ratio)
        if math.isfinite(loss) and math.isfinite(gnorm):
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
        self.words += words
        return loss, ce, maskable_rate, schedule_rate, gnorm, tokens

    def _nonfinite(self, loss: float, gnorm: float) -> None:
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {gnorm}"
        last = self.last_saved
        if self.cfg.objective.on_nonfinite == "skip":
            self.skipped += 1
            self.log(f"warning: step {self.step + 1}: {what}; update skipped ({self.skipped} so far)")
            if self.skipped <= self.cfg.objective.max_skipped:
                return
            raise TrainingFailed(f"{self.skipped} steps had a non-finite loss or gradient (more than objective.max_skipped = {self.cfg.objective.max_skipped}); training diverged.")
        saved = f" the last good checkpoint is step-{last};" if last is not None else ""
        raise TrainingFailed(f"Step {self.step + 1} gave a non-finite {what}:{saved} lower train.lr, or set objective.on_nonfinite=skip to skip such steps.")

    # ------------------------------------------------------------ dev loss

    @contextlib.contextmanager
    def inference(self, weights: str = "ema"):
        """EMA (or raw) weights, eval mode, no grad, the run's precision; training state restored after."""
        swap = self.ema.swapped(self.model) if weights == "ema" and self.ema is not None else contextlib.nullcontext()
        self.model.eval()
        try:
            with swap, torch.no_grad(), self.autocast():
                yield
        finally:
            self.model.train()

    def dev_loss(self) -> dict | None:
        cfg = self.cfg
        n = min(len(self.data.dev), cfg.train.dev_batches * cfg.train.batch_size)
        if n == 0:
            return None
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed + 7919)  # same masks every time
        chunks = torch.from_numpy(self.data.dev[:n].astype(np.int64))
        loss = ce = tokens = masked = 0.0
        with self.inference("ema"):
            for start in range(0, n, cfg.train.batch_size):
                ids = chunks[start:start + cfg.train.batch_size].to(self.device)
                out = diffusion_loss(self.model, ids, schedule=self.schedule, masker=self.masker,
                                     power=cfg.schedule.power, progress=self.step / self.plan.total_steps,
                                     epoch=self.stream.epoch, total_epochs=self.plan.total_epochs,
                                     generator=generator, subs=cfg.objective.subs)
                loss += out.loss.item() * out.n_tokens
                ce += out.masked_ce.item() * out.n_masked
                tokens += out.n_tokens
                masked += out.n_masked
        return {"dev_loss": loss / max(tokens, 1), "dev_masked_ce": ce / max(masked, 1),
                "dev_weights": "ema" if self.ema is not None else "raw", "dev_sequences": n}

    # ------------------------------------------------------------ the loop

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._t0)

    def _handle_signal(self, signum, frame) -> None:
        if self.stop_signum is not None:
            raise StopAtOnce(signum)  # `latest` still names a whole checkpoint
        self.stop_signum = signum
        self.stop_reason = signal.Signals(signum).name
        self.log(f"{self.stop_reason} received: saving a checkpoint and stopping after this step (send it again to stop at once)")

    def _log_interval(self, iv: _Interval) -> None:
        cfg, plan = self.cfg, self.plan
        seconds = time.perf_counter() - iv.start
        n = max(iv.steps, 1)
        record = {
            "event": "train", "step": self.step, "epoch": round(self.step / plan.steps_per_epoch, 4),
            "tokens": self.tokens, "words": self.words, "loss": iv.loss / n, "masked_ce": iv.ce / n,
            "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": iv.grad_norm / n,
            "tokens_per_s": iv.tokens / max(seconds, 1e-9), "mask_rate": iv.mask_rate / n,
            "schedule_rate": iv.schedule_rate / n,
            "p_freq": curriculum_power(cfg.masking.p_freq, self.stream.epoch, plan.total_epochs, cfg.masking.curriculum) if cfg.masking.kind == "frequency" else None,
            "skipped": self.skipped, "time": time.time(), "elapsed": self._elapsed(), "sys": self.monitor.sample(),
        }
        self.run.append_metrics(record)
        eta = (plan.total_steps - self.step) * seconds / n
        self.run.update_status(step=self.step, tokens=self.tokens, words=self.words, loss=record["loss"], eta_s=eta)
        self.log(f"step {self.step}/{plan.total_steps} | epoch {record['epoch']:.2f} | loss {record['loss']:.4f} | "
                 f"masked CE {record['masked_ce']:.4f} | lr {record['lr']:.2e} | {record['tokens_per_s']:,.0f} tok/s | "
                 f"mask {record['mask_rate']:.3f} (schedule {record['schedule_rate']:.3f}) | eta {_fmt_duration(eta)}")

    def _log_dev(self) -> None:
        result = self.dev_loss()
        if result is None:
            return
        self.run.append_metrics({"event": "dev", "step": self.step, **result, "time": time.time()})
        self.run.update_status(dev_loss=result["dev_loss"])
        self.log(f"step {self.step} | dev loss {result['dev_loss']:.4f} | dev masked CE {result['dev_masked_ce']:.4f} ({result['dev_weights']} weights)")

    def train(self) -> str:
        """Run to the end of the budget or a stop signal; returns the final state."""
        # Handlers first: a signal during data preparation also ends the run cleanly.
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, self._handle_signal),
                    signal.SIGTERM: signal.signal(signal.SIGTERM, self._handle_signal)}
        try:
            return self._train()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _obey(self, command: str | None) -> None:
        """Act on a command from control.json; a pause waits here, heartbeat still beating."""
        if command == "checkpoint" and self.last_saved != self.step:
            self.save()
            self.log(f"step {self.step} | checkpoint saved on request")
        elif command == "stop":
            self.stop_reason = "stop request"
        elif command == "pause":
            self.run.update_status(state="paused", step=self.step)
            self.log(f"step {self.step} | paused; resume from the TUI or with the control file")
            paused_at = time.perf_counter()
            while (command := self.control.poll()) not in ("resume", "stop") and self.stop_reason is None:
                if command == "checkpoint":
                    self._obey(command)
                time.sleep(0.2)
            self._t0 += time.perf_counter() - paused_at  # paused time is not training time
            self.run.update_status(state="running")
            self.log(f"step {self.step} | {'resumed' if command == 'resume' else 'stopping'}")
            if command == "stop":
                self.stop_reason = "stop request"

    def _train(self) -> str:
        cfg = self.cfg
        self.run.update_status(state="starting", step=self.step, message="preparing data", error=None)
        self._setup()
        plan = self.plan
        self.log(f"model: {sum(p.numel() for p in self.model.parameters()):,} parameters on {self.device}; "
                 f"{plan.total_steps:,} steps ({plan.total_epochs} epoch(s), {plan.steps_per_epoch:,.1f} steps an epoch)")
        self.run.update_status(state="running", total_steps=plan.total_steps, step=self.step, message="")
        self._t0 = time.perf_counter()
        iv = _Interval()
        self._obey(self.control.poll())  # a stop sent while the data was being prepared
        while self.step < plan.total_steps and self.stop_reason is None:
            iv.add(*self._train_step())
            self.progress(self.step, plan.total_steps)
            if self.step % cfg.train.log_every == 0 or self.step == plan.total_steps:
                self._log_interval(iv)
                iv = _Interval()
            if cfg.train.dev_every and self.step % cfg.train.dev_every == 0:
                self._log_dev()
            if cfg.eval.every and self.step % cfg.eval.every == 0:
                with self.inference(cfg.eval.weights):
                    self.probes.evaluate(self.model, self.step)
            if cfg.samples.every and self.step % cfg.samples.every == 0:
                with self.inference("ema"):
                    self.probes.sample(self.model, self.step)
            self._save_milestones()
            if self.step % cfg.train.checkpoint_every == 0:
                self.save()
            if self.device.type == "cpu" and self.step % RELEASE_EVERY == 0:
                release_free_memory()  # keeps RSS flat; see core/allocator.py
            self._obey(self.control.poll())
        if self.stop_reason is not None:
            self.run.update_status(state="stopping", step=self.step)
        if self.last_saved != self.step:
            self.save()
        state = "stopped" if self.stop_reason else "finished"
        self.run.update_status(state=state, step=self.step, tokens=self.tokens, words=self.words,
                               elapsed_s=self._elapsed(),
                               message=f"stopped by {self.stop_reason}" if self.stop_reason else "")
        self.log(f"{state} at step {self.step} after {_fmt_duration(self._elapsed())}; checkpoint {self.run.checkpoints_dir / ('step-%d' % self.step)}")
        return state


def _prepare_folder(cfg: Config, run: RunDir, resume: bool, log: Callable[[str], None]) -> bool:
    """Check the run folder and create it; returns whether to resume. A run that ended before its first
    checkpoint (a bad path, a kill in the first steps) holds nothing to keep: it starts afresh in place."""
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"--run-dir {run.path} is a file, not a folder; give a folder for the run.")
    if (pid := run.live_pid()) is not None:
        raise UserError(f"{run.path} is still being trained by process {pid}; stop it (kill {pid}), watch it "
                        f"with `mdlm-tui watch {run.path}` or choose another --run-dir.")
    status = run.read_status() if run.is_run() else {}
    # A trainer on another host sharing this disk: its pid cannot be checked here, its heartbeat can.
    host = status.get("host", socket.gethostname())
    if (status.get("state") in ACTIVE_STATES and host != socket.gethostname()
            and time.time() - status.get("heartbeat", 0) <= LIVE_HEARTBEAT_S):
        raise UserError(f"{run.path} is still being trained on {host} (its heartbeat is fresh); watch it with "
                        f"`mdlm-tui watch {run.path}` or choose another --run-dir.")
    if resume and (run.path / IMPORTED_MARKER).is_file():
        raise UserError(f"{run.path} holds imported weights without optimizer state or data position: "
                        "evaluate and sample it, or start a new run to train.")
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
        raise UserError(f"{run.path} already holds a run; continue it with --resume or choose another --run-dir.")
    if not resume:
        run.create(to_yaml(cfg))
    return resume


def config_summary(cfg: Config, config_path) -> str:
    """One line for the console; the full config is config.yaml (and `mdlm-tui inspect`)."""
    m, s = cfg.model, cfg.schedule
    masking = (f"frequency masking (p_freq {cfg.masking.p_freq:g}{', curriculum' if cfg.masking.curriculum else ''})"
               if cfg.masking.kind == "frequency" else f"{cfg.masking.kind} masking")
    return (f"config: {cfg.name} preset, {s.name} schedule (p={s.power:g}), {masking}, {m.num_layers} layers x "
            f"{m.hidden_size} ({m.num_heads} heads), budget {cfg.train.budget}; in full: {config_path}")


def start(cfg: Config, run: RunDir, device_name: str, resume: bool, log: Callable[[str], None] = print,
          progress: Callable[[int, int], None] | None = None, overrides: list[str] | None = None) -> Trainer:
    """Create or reopen the run directory, train, and keep status.json true whatever happens.
    Returns the trainer: its `stop_reason` says whether a signal or a stop request ended it early."""
    device = resolve_device(device_name)
    # Before anything is written: a corpus that cannot be found, or a model too big for the device,
    # is one sentence (the corpus first: it is what a preset without data.path needs).
    find_corpus(cfg.data)
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    check_fits(cfg, device, bf16=bf16)
    try:
        resume = _prepare_folder(cfg, run, resume, log)
    except OSError as e:
        raise UserError(f"Cannot write the run folder {run.path} ({e.strerror or e}); "
                        "choose a writable --run-dir.") from None
    log(config_summary(cfg, run.config_path))
    trainer = Trainer(cfg, run, device, resume, log, progress, overrides)
    heartbeat = run.start_heartbeat()

    def last_word(**fields) -> None:  # status.json may itself be unwritable (a read-only or deleted folder)
        with contextlib.suppress(OSError):
            run.update_status(**fields)

    try:
        trainer.train()
        return trainer
    except (UserError, TrainingFailed) as e:
        last_word(state="failed", error=str(e), step=trainer.step)
        raise
    except StopAtOnce as e:
        trainer.stop_signum = e.signum
        step = trainer.last_saved or 0
        name = signal.Signals(e.signum).name
        last_word(state="stopped", step=step, message=f"stopped at once by a second {name}; resumes from step {step}")
        log(f"stopped at once by a second {name}; --resume continues from step {step}")
        return trainer
    except KeyboardInterrupt:
        last_word(state="stopped", step=trainer.last_saved or 0, message="interrupted")
        raise
    except OSError as e:
        reason = f"Cannot write the run folder {run.path} ({e.strerror or e}); it was made read-only, filled up or removed."
        last_word(state="failed", error=reason, step=trainer.step)
        raise UserError(reason) from None
    except BaseException as e:
        last_word(state="failed", error=f"{type(e).__name__}: {e}", step=trainer.step)
        raise
    finally:
        heartbeat.set()
        with contextlib.suppress(OSError):
            run.close()
