"""`mdlm-tui sweep`: train, then evaluate, every run of a sweep file, each an ordinary run folder.

Each run is a child process, `mdlm-tui run` and then `mdlm-tui eval`, writing to sweep.log in its run
folder; the sweep prints one line per event and a table at the end, and keeps sweep.json up to date.

The same command again continues where the last one ended:
    finished (and evaluated)    skipped; a finished run whose evaluation did not complete or failed is
                                evaluated again
    stopped, or killed          resumed from its last checkpoint (a new run folder starts afresh)
    trained by a live process   waited for, never started twice
    failed                      reported again; trained again (from its last checkpoint) only with
                                --retry-failed. Failed means its trainer said so or a sweep saw it fail.
A failed run never stops the others; the sweep exits 1 once the rest are done. Ctrl-C or SIGTERM asks
each child to stop after a checkpoint, and a sweep killed outright has Linux do the same (SIGTERM), so
no run trains on unseen.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from core.errors import UserError

LOG = "sweep.log"  # in each run folder: its children's output, every attempt appended
EVAL_OUT = "sweep-eval.json"  # in each run folder: `eval --json`, written once every suite is scored
POLL_S = 0.25


def sweep(
    sweep_file: str = typer.Argument(
        ..., help="A sweep YAML file (base:, set:, grid:, runs:, ...), or the name of one in presets/sweeps."
    ),
    sweep_dir: Optional[Path] = typer.Option(
        None, "--sweep-dir", help="The folder of the sweep's runs (default: runs/<file name>[-<scale>])."
    ),
    parallel: Optional[int] = typer.Option(
        None, "--parallel", help="Runs at once (default: one per visible GPU, else one)."
    ),
    scale: Optional[str] = typer.Option(
        None, "--scale", help="One of the file's scales (default: its scale: key, else its first)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the file and print the plan; start nothing."
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Train the runs that failed before again, from their last checkpoint."
    ),
    only: List[str] = typer.Option(
        [],
        "--only",
        help="Train and evaluate only these runs, in this order: names or shell patterns, e.g. "
        "--only 'cosine-*' (repeatable, or comma-separated); the others are left as they are.",
    ),
    overrides: List[str] = typer.Option(
        [],
        "--set",
        "-s",
        help="Override a config key for every run, after the file's set:, e.g. "
        "--set data.path=../data/train_10M (repeatable; give the same on a rerun).",
    ),
):
    """Train every run of a sweep file (a grid of overrides on a preset) and evaluate each; the same
    command again skips what is done and continues the rest."""
    from core.sweep import load_plan, missing_suite_data, select

    plan = load_plan(sweep_file, scale, overrides)
    chosen = select(plan, only)
    folder = sweep_dir or plan.default_dir
    if parallel is not None and parallel < 1:
        raise UserError(f"--parallel must be at least 1, got {parallel}.")
    again = _command_line(sweep_file, scale, sweep_dir, overrides, only)
    runner = Sweep(plan, folder, _slots(parallel, plan), retry_failed, again, chosen)
    if dry_run:
        runner.show_plan(missing_suite_data(plan))
        return
    problem = missing_suite_data(plan)
    if problem:
        raise UserError(f"{problem}.")
    code = runner.run()
    if code:
        raise typer.Exit(code)


def _command_line(
    sweep_file: str, scale: str | None, sweep_dir: Path | None, overrides: list[str], only: list[str]
) -> str:
    words = ["mdlm-tui", "sweep", sweep_file]
    words += ["--scale", scale] if scale else []
    words += ["--sweep-dir", str(sweep_dir)] if sweep_dir else []
    words += [f"--only {shlex.quote(pattern)}" for pattern in only]
    words += [f"--set {shlex.quote(pair)}" for pair in overrides]
    return " ".join(words)


def _gpus() -> list[str]:
    """The GPUs a child may be given, as CUDA_VISIBLE_DEVICES names them; found without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = []
        for one in (v.strip() for v in visible.split(",")):
            if not one or one == "-1":  # CUDA reads the list up to its first invalid entry
                break
            ids.append(one)
        return ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, _ in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]


def _slots(parallel: int | None, plan) -> list[dict]:
    """One environment per run at once: each its own GPU where there are GPUs, else a share of the cores."""
    gpus = _gpus() if any(run.config.train.device != "cpu" for run in plan.runs) else []
    count = parallel or max(len(gpus), 1)
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} for i in range(count)]
    if count == 1 or "OMP_NUM_THREADS" in os.environ:
        return [{}] * count
    # train.threads=0 takes every core: runs side by side would each spin on all of them
    return [{"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // count))}] * count


def _die_with_sweep():
    """A preexec function asking Linux to send the child SIGTERM when the sweep dies, even by kill -9,
    so no run trains on unseen. SIGTERM, not SIGHUP: the trainer turns SIGTERM into a stop after a
    checkpoint in every process (SIGHUP only in a launcher's workers), and the next sweep resumes it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the sweep died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _lock(folder: Path):
    """Hold the sweep folder for this process's lifetime: a second sweep there would start the same runs.
    A lock on an open file, so that a sweep killed outright leaves none behind."""
    handle = open(folder / ".sweep.lock", "a")
    try:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no such locks here: the trainers still refuse a run folder being trained
        pass
    except BlockingIOError:
        handle.close()
        raise UserError(
            f"Another sweep is running in {folder}; wait for it to end, or stop it and run this again."
        ) from None
    return handle


@dataclass
class Job:
    name: str
    kind: str  # train | eval | wait (for a trainer another process started)
    slot: int
    process: subprocess.Popen | None = None


class Sweep:
    def __init__(
        self, plan, folder: Path, slots: list[dict], retry_failed: bool, again: str, chosen: list[str]
    ):
        from core.sweep import new_record, read_index

        self.plan, self.folder, self.slots, self.chosen = plan, Path(folder), slots, chosen
        self.retry_failed, self.again = retry_failed, again
        self.runs = {run.name: run for run in plan.runs}
        self.previous = read_index(self.folder)
        self.records = {run.name: new_record(run) for run in plan.runs}
        self.queue: list[tuple[str, str]] = []
        self.jobs: list[Job] = []
        self.stopping: int | None = None  # the first stop signal the sweep received
        self.received = self.passed = 0  # stop signals received, and passed on to the children
        self.preexec = _die_with_sweep()
        self.lock = None  # the sweep folder's, held while running

    # ------------------------------------------------------------ what each run needs

    def decide(self, name: str) -> tuple[str | None, str]:
        """What a run needs now (train, eval, wait or nothing) and a few words on why; its record
        updated to what its folder says."""
        from core.runs import RunDir, run_health, step_dirs, trainer_alive

        run, record = RunDir(self.folder / name), self.records[name]
        previous = self.previous.get(name, {})
        status = run.read_status() if run.is_run() else {}
        record.update(step=status.get("step"), loss=status.get("loss"))
        if status and trainer_alive(status):
            record["state"] = "running"
            host = status.get("host")
            where = f"process {status.get('pid')}" + (
                f" on {host}" if host and host != socket.gethostname() else ""
            )
            return "wait", f"being trained by {where} (step {status.get('step', 0)}); waiting for it"
        health = run_health(status) if status else None
        if health == "finished":
            record["state"] = "finished"
            if not self.plan.suites:
                return None, f"finished earlier (step {record['step']}); skipped"
            macros = self.evaluated(run, status, previous)
            if macros is not None:
                record.update(state="evaluated", eval=macros, eval_suites=self.plan.suites)
                return None, f"evaluated earlier ({_macros(macros)}); skipped"
            return "eval", "finished; its evaluation did not complete"
        # failed: its trainer said so, or an earlier sweep saw it fail (a resume refused, a trainer killed)
        if health == "failed" or previous.get("state") == "failed":
            error = status.get("error") or previous.get("error") or "it failed"
            if not self.retry_failed:
                record.update(state="failed", error=error)
                return None, f"failed earlier: {error} (--retry-failed trains it again)"
        checkpoints = step_dirs(run.checkpoints_dir) if run.is_run() else []
        if checkpoints:
            record["state"] = "stopped" if status else "pending"
            return "train", f"resumes from {checkpoints[-1].name}"
        return "train", "starts"

    def evaluated(self, run, status: dict, previous: dict) -> dict | None:
        """The macro accuracies of a completed evaluation of the run's last step, or None."""
        import json

        try:
            data = json.loads((run.path / EVAL_OUT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        reports = [r for r in (data if isinstance(data, list) else [data]) if isinstance(r, dict)]
        step = f"step-{status.get('step')}"
        if not reports or any(Path(str(r.get("checkpoint", ""))).name != step for r in reports):
            return None
        if previous.get("eval_suites", self.plan.suites) != self.plan.suites:
            return None  # the sweep file's suites changed since
        return {
            r["suite"]: r["macro"]
            for r in reports
            if isinstance(r.get("suite"), str) and isinstance(r.get("macro"), (int, float))
        }

    # ------------------------------------------------------------ the plan, without running it

    def show_plan(self, problem: str | None) -> None:
        plan = self.plan
        scale = f", scale {plan.scale}" if plan.scale else ""
        print(
            f"sweep {plan.file.name}{scale}: {_runs(len(plan.runs))} from the preset {plan.base}, "
            f"in {self.folder}, {len(self.slots)} at once"
        )
        width = max(len(name) for name in self.runs)
        for name in self.chosen + [name for name in self.runs if name not in self.chosen]:  # as they train
            run = self.runs[name]
            _, why = self.decide(name)
            why = why if name in self.chosen else f"not in --only: {why.split(';')[0]}"
            row = " ".join(f"{k}={v}" for k, v in run.overrides.items() if k != "name")
            print(f"  {name:<{width}}  {row or '(the base alone)'}  [{why}]")
        shared = [s for s in plan.runs[0].settings if all(s in run.settings for run in plan.runs)]
        if shared:
            print(f"every run: {' '.join(shared)}")
        if plan.suites:
            data = plan.data or "each run's eval.data_dir"
            print(f"evaluated after training: {', '.join(plan.suites)} (data: {data})")
        if problem:
            print(f"note: {problem}; the sweep refuses to start until it is found")

    # ------------------------------------------------------------ running

    def run(self) -> int:
        """Every run to its end; the exit code: 0, 1 when a run failed, 128 + N when stopped by signal N."""
        from core.sweep import COPY

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.lock = _lock(self.folder)
            copy = self.folder / COPY
            if not copy.exists() or not copy.samefile(self.plan.file):
                shutil.copyfile(self.plan.file, copy)
        except OSError as e:
            raise UserError(f"Cannot write the sweep folder {self.folder} ({e.strerror or e}).") from None
        self.say(
            None,
            f"sweep {self.plan.file.name}: {_runs(len(self.runs))} in {self.folder}, "
            f"{len(self.slots)} at once",
        )
        for name in self.runs:  # every run's record is brought up to date, chosen or not
            action, why = self.decide(name)
            if name in self.chosen and action in (None, "wait", "eval"):  # a start says itself later
                self.say(name, why)
            if name in self.chosen and action is not None:
                self.queue.append((name, action))
        self.queue.sort(key=lambda job: self.chosen.index(job[0]))
        self.save()
        handlers = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.jobs or (self.queue and self.stopping is None):
                self.pass_on_signals()
                self.launch()
                self.reap()
                if self.jobs:
                    time.sleep(POLL_S)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        self.save()
        self.summary()
        return self.ending()

    def on_signal(self, signum, frame) -> None:
        """Ctrl-C or SIGTERM: noted here, acted on by the loop (printing inside a handler could
        interrupt a print): each child is asked to stop after a checkpoint, at once on a second signal."""
        self.stopping = self.stopping or signum
        self.received += 1

    def pass_on_signals(self) -> None:
        while self.passed < self.received:
            if not self.passed:
                self.say(None, "stopping: each run saves a checkpoint and stops (again to stop at once)")
            self.passed += 1
            for job in self.jobs:
                if job.process is not None and job.process.poll() is None:
                    job.process.send_signal(signal.SIGTERM)

    def launch(self) -> None:
        while self.queue and self.stopping is None:
            busy = {job.slot for job in self.jobs}
            free = [slot for slot in range(len(self.slots)) if slot not in busy]
            if not free:
                return
            name, kind = self.queue.pop(0)
            job = Job(name, kind, free[0])
            if kind != "wait":
                job.process = self.start(name, kind, self.slots[free[0]])
            self.jobs.append(job)

    def start(self, name: str, kind: str, env: dict) -> subprocess.Popen:
        from core.runs import RunDir, step_dirs

        plan, run = self.plan, RunDir(self.folder / name)
        record = self.records[name]
        settings = [*self.runs[name].settings, f"name={name}"]
        if kind == "train":
            checkpoints = step_dirs(run.checkpoints_dir) if run.is_run() else []
            if run.is_run() and not checkpoints and not run.read_status():
                run.clear()  # a config.yaml alone: a start killed before its first status, nothing to keep
            command = ["run", "--preset", plan.preset, "--run-dir", str(run.path)]
            command += ["--resume"] if checkpoints else []
            command += [f"--set={s}" for s in settings]
            said = f"resumed from {checkpoints[-1].name}" if checkpoints else "started"
            record.update(state="running", error=None)
        else:
            (run.path / EVAL_OUT).unlink(missing_ok=True)  # a stale one never counts as this evaluation
            command = ["eval", str(run.path), "--suite", ",".join(plan.suites)]
            command += ["--data", plan.data] if plan.data else []
            # the run's eval.limit (items per UID), as its evaluations while training use it
            limit = self.runs[name].config.eval.limit
            command += ["--limit", str(limit)] if limit else []
            command += ["--json", str(run.path / EVAL_OUT)]
            said = f"evaluating {', '.join(plan.suites)}"
        argv = [sys.executable, "-m", "mdlm_tui", *command]
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            with open(run.path / LOG, "a", encoding="utf-8") as log:
                log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} mdlm-tui {' '.join(command)}\n")
                log.flush()
                # a session of its own: Ctrl-C reaches the sweep alone, which passes on one SIGTERM
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                    start_new_session=True,
                    preexec_fn=self.preexec,
                )
        except OSError as e:
            raise UserError(f"Cannot start {name} in {run.path} ({e.strerror or e}).") from None
        gpu = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else ""
        self.say(name, f"{said}{gpu} (log: {run.path / LOG})")
        self.save()
        return process

    def reap(self) -> None:
        from core.runs import RunDir, trainer_alive

        for job in list(self.jobs):
            if job.kind == "wait":
                if self.stopping is None and trainer_alive(RunDir(self.folder / job.name).read_status()):
                    continue
                self.jobs.remove(job)
                if self.stopping is None:
                    action, why = self.decide(job.name)
                    self.say(job.name, f"its trainer ended; {why}")
                    if action is not None:
                        self.queue.insert(0, (job.name, action))
                self.save()
                continue
            code = job.process.poll()
            if code is None:
                continue
            self.jobs.remove(job)
            if job.kind == "train":
                self.trained(job.name, code, job.process.pid)
            else:
                self.scored(job.name, code)
            self.save()

    def trained(self, name: str, code: int, pid: int) -> None:
        from core.runs import RunDir

        status, record = RunDir(self.folder / name).read_status(), self.records[name]
        record.update(step=status.get("step"), loss=status.get("loss"))
        # a status an earlier attempt wrote says nothing of this one, which failed before writing its own
        state = status.get("state") if status.get("pid") == pid else None
        if code == 0 and state == "finished":
            record["state"] = "finished"
            loss = f", loss {record['loss']:.4f}" if isinstance(record["loss"], (int, float)) else ""
            self.say(name, f"finished at step {record['step']}{loss}")
            if self.plan.suites:
                self.queue.insert(0, (name, "eval"))
        elif state == "stopped":
            record["state"] = "stopped"
            self.say(name, f"stopped at step {record['step']}; the same sweep again resumes it")
        else:
            error = self.why_failed(name, code, status)
            record.update(state="failed", error=error)
            self.say(name, f"failed: {error}")

    def scored(self, name: str, code: int) -> None:
        from core.runs import RunDir

        run, record = RunDir(self.folder / name), self.records[name]
        macros = self.evaluated(run, run.read_status(), {}) if code == 0 else None
        if macros is not None:
            record.update(state="evaluated", eval=macros, eval_suites=self.plan.suites)
            self.say(name, f"evaluated: {_macros(macros)}")
        elif self.stopping is not None:
            record["state"] = "finished"  # its evaluation is done again by the next sweep
        else:
            error = self.why_failed(name, code, {})
            record.update(state="failed", error=f"evaluation failed: {error}")
            self.say(name, f"evaluation failed: {error}")

    def last_error(self, name: str) -> str | None:
        """The last attempt's error from the run's log: the CLI's `error:` sentence, else the last line of
        a traceback; None when it said neither."""
        try:
            text = (self.folder / name / LOG).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        lines = [line.strip() for line in text.rpartition("\n=== ")[2].splitlines()[1:] if line.strip()]
        said = [line for line in lines if line.startswith("error:")]
        if said:
            return said[-1].removeprefix("error:").strip()
        return lines[-1] if any(line.startswith("Traceback") for line in lines) else None

    def why_failed(self, name: str, code: int, status: dict) -> str:
        if sentence := self.last_error(name) or status.get("error"):
            return sentence
        if code < 0:
            return f"it was ended by {signal.Signals(-code).name}"
        return f"it exited with code {code}; see {self.folder / name / LOG}"

    # ------------------------------------------------------------ saying it

    def say(self, name: str | None, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {f'{name}: ' if name else ''}{text}", flush=True)

    def save(self) -> None:
        from core.sweep import write_index

        try:
            write_index(self.folder, self.plan, list(self.records.values()))
        except OSError as e:
            raise UserError(f"Cannot write {self.folder / 'sweep.json'} ({e.strerror or e}).") from None

    def summary(self) -> None:
        records = list(self.records.values())
        suites = list(dict.fromkeys(s for r in records for s in r.get("eval") or {}))
        head = ["run", "state", "step", "loss", *suites, "note"]
        rows = [
            [
                r["name"],
                r["state"],
                "" if r["step"] is None else str(r["step"]),
                f"{r['loss']:.4f}" if isinstance(r["loss"], (int, float)) else "",
                *(f"{100 * r['eval'][s]:.1f}" if s in (r.get("eval") or {}) else "" for s in suites),
                _shorten(r["error"] or "", 60),
            ]
            for r in records
        ]
        widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
        print()
        for row in [head, *rows]:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())

    def ending(self) -> int:
        if self.stopping is not None:
            stopped = [r["name"] for r in self.records.values() if r["state"] in ("stopped", "running")]
            name = signal.Signals(self.stopping).name
            print(
                f"stopped by {name} ({_runs(len(stopped))} stopped after a checkpoint); `{self.again}` "
                "continues the sweep",
                file=sys.stderr,
            )
            return 128 + self.stopping
        failed = [r for r in self.records.values() if r["state"] == "failed" and r["name"] in self.chosen]
        if failed:
            scoring = [r["name"] for r in failed if (r["error"] or "").startswith("evaluation failed")]
            training = [r["name"] for r in failed if r["name"] not in scoring]
            then = [f"`{self.again}` evaluates {', '.join(scoring)} again"] if scoring else []
            then += [f"`{self.again} --retry-failed` trains {', '.join(training)} again"] if training else []
            print(
                f"error: {len(failed)} of {_runs(len(self.records))} failed; their logs are "
                f"{self.folder}/NAME/{LOG}, and {' and '.join(then)}",
                file=sys.stderr,
            )
            return 1
        return 0


def _runs(count: int) -> str:
    return f"{count} run{'' if count == 1 else 's'}"


def _shorten(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


def _macros(macros: dict) -> str:
    return ", ".join(f"{suite} {100 * value:.1f}%" for suite, value in macros.items()) or "no macro average"
