"""The `mdlm-tui` command line. The engine (torch) is imported only inside commands that need it,
so `mdlm-tui --help` answers at once."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from core.errors import TrainingFailed, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="A terminal workbench for masked diffusion language models with frequency-informed masking.",
)

PresetOpt = typer.Option(None, "--preset", "-p", help="Preset name (see `mdlm-tui presets`) or a YAML file.")
SetOpt = typer.Option([], "--set", "-s", help="Override a config key, e.g. --set train.lr=3e-4 (repeatable).")


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _default_run_dir(name: str, root: Path) -> Path:
    return root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.command()
def run(
    preset: Optional[str] = PresetOpt,
    overrides: List[str] = SetOpt,
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help="Run folder (default: runs/<preset>-<time>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its latest checkpoint."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (default: the config's train.device)."),
):
    """Train headless, writing a run folder that `mdlm-tui watch` and the TUI can follow."""
    from core.config import apply_overrides, load_config, load_saved_config, to_yaml
    from core.runs import RunDir, atomic_write_text

    if resume:
        if run_dir is None:
            raise UserError("--resume needs --run-dir pointing at the run to continue.")
        run = RunDir(run_dir)
        if not run.is_run():
            raise UserError(f"{run_dir} holds no run to resume (no config.yaml).")
        cfg = load_saved_config(run.config_path, overrides)
        if overrides:
            atomic_write_text(run.config_path, to_yaml(cfg))
    else:
        if preset is None:
            raise UserError("Choose a preset with --preset NAME (see `mdlm-tui presets`), or continue a run with --resume.")
        cfg = apply_overrides(load_config(preset), overrides)
        run = RunDir(run_dir or _default_run_dir(cfg.name, Path("runs")))

    log, progress, done = _reporter()
    log(f"run folder: {run.path}")
    log("config:\n" + to_yaml(cfg).rstrip())
    import signal

    from core.trainer import start

    try:
        trainer = start(cfg, run, device or cfg.train.device, resume, log=log, progress=progress)
    finally:
        done()
    if trainer.stop_signal:  # the shell convention for "ended by a signal": 128 + its number
        raise typer.Exit(128 + signal.Signals[trainer.stop_signal].value)


def _reporter():
    """One line per logging interval; on a terminal also a live progress bar under the lines."""
    def stamped(line: str) -> str:
        return f"[{time.strftime('%H:%M:%S')}] {line}"

    if not _stdout_is_terminal():
        return lambda line: print(stamped(line), flush=True), None, lambda: None

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console()
    bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True)
    task = bar.add_task("train", total=None)
    bar.start()

    def progress(step: int, total: int) -> None:
        bar.update(task, completed=step, total=total)

    return lambda line: console.print(stamped(line), markup=False, highlight=False), progress, bar.stop


@app.command()
def presets():
    """List the presets, one line each."""
    from core.config import load_config, preset_names

    names = preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {load_config(name).description}")


@app.command()
def inspect(
    preset: str = typer.Option(..., "--preset", "-p", help="Preset name or YAML file."),
    overrides: List[str] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Print the resolved config and the model's parameter count."""
    from core.config import apply_overrides, load_config, to_dict, to_yaml
    from core.model import count_parameters

    cfg = apply_overrides(load_config(preset), overrides)
    params = count_parameters(cfg.model, cfg.data.vocab_size)
    if as_json:
        print(json.dumps({"config": to_dict(cfg), "parameters": params}, indent=2))
    else:
        print(to_yaml(cfg).rstrip())
        print(f"# parameters: {params:,}")


@app.command()
def schedule(
    name: str = typer.Argument(..., help="linear | cosine | cosine-squared | log-linear | gaussian | bimodal"),
    overrides: List[str] = typer.Option([], "--set", "-s", help="Schedule keys, e.g. --set power=0.1 (the schedule. prefix is optional)."),
    progress: Optional[str] = typer.Option(None, "--progress", help="Training progress points, e.g. 0,0.5,1 (default: 0,0.5,1 for bimodal, else 0)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Show a schedule's mean mask rate and NELBO weight quantiles, to see what p does before training."""
    from core.config import Config, apply_overrides
    from core.schedules import summarize

    cfg = apply_overrides(Config(), [f"schedule.name={name}"] + [o if o.startswith("schedule.") else f"schedule.{o}" for o in overrides])
    try:
        points = [float(p) for p in progress.split(",")] if progress else ([0.0, 0.5, 1.0] if name == "bimodal" else [0.0])
    except ValueError:
        raise UserError(f"--progress must be numbers separated by commas, got '{progress}'.") from None
    results = [summarize(cfg.schedule, progress=p) for p in points]
    if as_json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name} schedule, p = {cfg.schedule.power:g}")
    for col in ("progress", "E[r]", "w mean", "w p1", "w p50", "w p99", "w max"):
        table.add_column(col, justify="right")
    for r in results:
        w = r["weight"]
        table.add_row(f"{r['progress']:g}", f"{r['mean_rate']:.4f}", *(f"{w[k]:.4g}" for k in ("mean", "p1", "p50", "p99", "max")))
    Console().print(table)


@app.command()
def sample(
    target: str = typer.Argument(..., help="A run folder (its latest checkpoint) or a checkpoint folder runs/NAME/checkpoints/step-N."),
    length: int = typer.Option(64, "--length", help="Tokens in the sample, <s> included."),
    steps: int = typer.Option(32, "--steps", help="Unmasking steps."),
    sampler: str = typer.Option("ancestral", "--sampler", help="ancestral | confidence"),
    seed: int = typer.Option(0, "--seed"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="A prefix, or an infill template with <mask> or <mask>*N where tokens are to be filled."),
    temperature: float = typer.Option(1.0, "--temperature", help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p"),
    schedule_name: str = typer.Option("linear", "--schedule", help="Reverse-process schedule: linear | cosine | cosine-squared | log-linear."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write every step's state as JSON lines to this file."),
    weights: str = typer.Option("ema", "--weights", help="ema | raw"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
):
    """Generate text by iterative unmasking and print it (live, step by step, on a terminal)."""
    from core.evaluate import load_for_eval
    from core.sampling import MASK_TEXT, SampleConfig, sample as run_sampler, trace_to_jsonl

    cfg = SampleConfig(length=length, steps=steps, sampler=sampler, temperature=temperature, top_p=top_p,
                       seed=seed, schedule=schedule_name)
    model, tokenizer, _, ckpt = load_for_eval(target, weights=weights, device=device,
                                              warn=lambda m: print(m, file=sys.stderr))
    on_step, finish = None, lambda: None
    if _stdout_is_terminal():
        from rich.live import Live
        from rich.text import Text

        def styled(text: str) -> Text:
            out = Text()
            for i, part in enumerate(text.split(MASK_TEXT)):
                if i:
                    out.append("░", style="reverse")
                out.append(part)
            return out

        live = Live(Text(""), auto_refresh=False, transient=True)
        live.start()
        on_step = lambda step: live.update(Text(f"step {step.step}/{steps}, {step.masked} masked\n") + styled(step.text), refresh=True)
        finish = live.stop
    try:
        result = run_sampler(model, tokenizer, cfg, prompt=prompt, device=str(next(model.parameters()).device), on_step=on_step)
    finally:
        finish()
    if trace is not None:
        trace_to_jsonl(result, trace)
    print(result.text)
    print(f"({ckpt}, {result.forward_passes} forward passes, {result.seconds:.2f} s)", file=sys.stderr)


def main() -> None:
    try:
        app()
    except (UserError, TrainingFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
