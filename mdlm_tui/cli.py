"""The `mdlm-tui` command line. The engine (torch) is imported only inside commands that need it,
so `mdlm-tui --help` answers at once."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from core.errors import TrainingFailed, UserError
from core.registry import SAMPLERS, SCHEDULES, load_plugins
from core.suites import suite_names
from mdlm_tui import sweep_cli
from mdlm_tui.compare.cli import compare

_show_warning = warnings.showwarning

app = typer.Typer(
    add_completion=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: the rich one labels every flag, --help included, with a <bool> type
    help="A terminal workbench for masked diffusion language models with frequency-informed masking.",
)

PresetOpt = typer.Option(None, "--preset", "-p", help="Preset name (see `mdlm-tui presets`) or a YAML file.")
SetOpt = typer.Option([], "--set", "-s", help="Override a config key, e.g. --set train.lr=3e-4 (repeatable).")


# Help texts that list registered names: built at import, and again once MDLM_TUI_PLUGINS is loaded
# (see _refresh_choice_help), so a plugin's names show in --help too.
def _schedule_help() -> str:
    return f"{' | '.join(SCHEDULES.names())}, or one your own module registers."


def _suite_help() -> str:
    return (
        f"{', '.join(suite_names())} (babylm: every BabyLM zero-shot task, with a summary), "
        "dev (dev-set NELBO), a .jsonl file or folder, hf:<id>, or a suite your own module registers "
        "(core.suites.register_suite); comma-separated for several (default: the run's eval.suites)."
    )


def _sampler_help() -> str:
    return (
        f"{' | '.join(SAMPLERS.names())}, or one your own module registers (core.sampling.register_sampler)."
    )


def _sampling_schedule_help() -> str:
    return f"Reverse-process schedule: {' | '.join(SCHEDULES.having('sampling'))}."


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _default_run_dir(name: str, root: Path) -> Path:
    return root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.callback()
def open_workbench(
    ctx: typer.Context,
    runs: Path = typer.Option(Path("runs"), "--runs", help="The folder holding your runs (for the TUI)."),
):
    """Without a command, open the workbench (TUI) on the runs folder."""
    if ctx.invoked_subcommand is None:
        from mdlm_tui.app import run_app

        run_app(runs_root=runs)


@app.command(short_help="Train headless, writing a run folder.")
def run(
    preset: Optional[str] = PresetOpt,
    overrides: List[str] = SetOpt,
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", "-o", help="Run folder (default: runs/<preset>-<time>)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --run-dir from its latest checkpoint."
    ),
    device: Optional[str] = typer.Option(
        None, "--device", help="auto | cpu | cuda | cuda:N (default: the config's train.device)."
    ),
    nproc_per_node: Optional[int] = typer.Option(
        None, "--nproc-per-node", help="Workers on this node (one per GPU) through torchrun's launcher."
    ),
    nnodes: Optional[int] = typer.Option(
        None, "--nnodes", help="Nodes of a multi-node run (default: 1, or SLURM's count)."
    ),
    node_rank: Optional[int] = typer.Option(
        None, "--node-rank", help="This node's place among them (default: SLURM's)."
    ),
    rdzv_endpoint: Optional[str] = typer.Option(
        None, "--rdzv-endpoint", help="HOST:PORT where the nodes meet (default: SLURM's first node)."
    ),
    rdzv_id: Optional[str] = typer.Option(
        None, "--rdzv-id", help="The same id on every node (default: SLURM's job id)."
    ),
):
    """Train headless, writing a run folder that `mdlm-tui watch` and the TUI can follow."""
    from core.config import apply_overrides, check_resume_changes, load_config, load_saved_config
    from core.distributed import World, world_from_env
    from core.runs import RunDir

    launching = nproc_per_node is not None and "TORCHELASTIC_RUN_ID" not in os.environ
    world = World() if launching else world_from_env()

    if resume:
        if run_dir is None:
            raise UserError("--resume needs --run-dir pointing at the run to continue.")
        run = RunDir(run_dir)
        if not run.is_run():
            raise UserError(f"{run_dir} holds no run to resume (no config.yaml).")
        import copy

        from core.checkpoint import step_dirs

        saved = load_saved_config(run.config_path)
        cfg = apply_overrides(copy.deepcopy(saved), overrides)
        if step_dirs(run.checkpoints_dir):  # config.yaml itself is rewritten only once the resume holds
            check_resume_changes(saved, cfg)
    else:
        if preset is None:
            raise UserError(
                "Choose a preset with --preset NAME (see `mdlm-tui presets`), "
                "or continue a run with --resume."
            )
        from core.config import base_names

        if preset in base_names():
            raise UserError(
                f"{preset} is a base recipe that other presets extend, not a run of its own; train one of "
                "them (see `mdlm-tui presets`) or your own file that extends it."
            )
        cfg = load_config(preset, overrides)
        if run_dir is None and world.several:
            raise UserError("With several workers give --run-dir: the one folder they all train into.")
        run = RunDir(run_dir or _default_run_dir(cfg.name, Path("runs")))

    if launching:
        from core.corpus import find_corpus
        from core.launcher import launch, nodes_from
        from core.trainer import accumulation

        if nproc_per_node < 1:
            raise UserError(f"--nproc-per-node must be at least 1, got {nproc_per_node}.")
        find_corpus(cfg.data)  # said once here, not once by every worker
        nodes = nodes_from(nnodes, node_rank, rdzv_endpoint, rdzv_id)
        accumulation(cfg, nproc_per_node * nodes.count)
        device = device or cfg.train.device
        worker_args = [
            "run",
            "--run-dir",
            str(run.path),
            "--device",
            device,
            *(["--resume"] if resume else ["--preset", preset]),
            *[f"--set={o}" for o in overrides],
        ]
        print(f"starting {nproc_per_node} worker(s) on this node ({nodes.count} node(s) in all)", flush=True)
        code = launch(nproc_per_node, nodes, device, worker_args, run)
        if code:
            raise typer.Exit(code)
        return

    log, progress, done = _reporter() if world.main else ((lambda line: None), None, (lambda: None))
    log(f"run folder: {run.path}")
    from core.trainer import start

    try:
        trainer = start(
            cfg,
            run,
            device or cfg.train.device,
            resume,
            log=log,
            progress=progress,
            overrides=overrides if resume else None,
            world=world,
        )
    finally:
        done()
    if trainer.stop_signum:  # the shell convention for "ended by a signal": 128 + its number
        raise typer.Exit(128 + trainer.stop_signum)


@app.command(short_help="Attach the workbench to a run.")
def watch(
    run_dir: Path = typer.Argument(
        ..., help="A run folder, e.g. runs/bimodal-p0; also one trained headless on this server."
    ),
):
    """Attach the workbench to a run: live curves, system stats, log; stop, pause and checkpoint keys."""
    from core.runs import RunDir

    if not RunDir(run_dir).is_run():
        raise UserError(f"{run_dir} holds no run (no config.yaml); give a folder that `mdlm-tui run` wrote.")
    from mdlm_tui.app import run_app

    run_app(runs_root=run_dir.resolve().parent, watch=run_dir.resolve())


@app.command(short_help="Stop, pause, resume or checkpoint a running trainer.")
def control(
    run_dir: Path = typer.Argument(..., help="The run folder of a running trainer."),
    command: str = typer.Argument(..., help="stop | pause | resume | checkpoint"),
):
    """Tell a running trainer to stop (after a checkpoint), pause, resume or checkpoint now."""
    from core.control import send
    from core.runs import RunDir

    run = RunDir(run_dir)
    if not run.is_run():
        raise UserError(f"{run_dir} holds no run (no config.yaml).")
    pid = run.live_pid()
    if pid is None:
        raise UserError(
            f"No trainer is working on {run_dir} now (state: {run.read_status().get('state', 'unknown')})."
        )
    send(run.path, command)
    print(f"sent '{command}' to the trainer of {run_dir} (process {pid}); it acts after the current step")


@app.command(short_help="Bring back a run deleted in the TUI.")
def restore(
    name: Optional[str] = typer.Argument(
        None, help="A deleted run's name, or its folder name in the trash (default: list the trash)."
    ),
    runs: Path = typer.Option(Path("runs"), "--runs", help="The folder holding your runs."),
):
    """Bring back a run deleted in the TUI (kept in RUNS/.trash); without NAME, list what is there."""
    from core.runs import TRASH_FOLDER, original_name, restore_run, trashed_runs

    trashed = trashed_runs(runs)
    if name is None:
        if not trashed:
            print(f"{runs / TRASH_FOLDER} holds no deleted run.")
        for path in trashed:  # most recently deleted first
            print(f"{path.name}  (restores to {runs / original_name(path)})")
        return
    # a folder name in the trash picks that one; a run's own name, its most recently deleted copy
    chosen = next((p for p in trashed if p.name == name), None) or next(
        (p for p in trashed if original_name(p) == name), None
    )
    if chosen is None:
        raise UserError(
            f"No deleted run named {name} in {runs / TRASH_FOLDER}; "
            f"`mdlm-tui restore --runs {runs}` lists them."
        )
    print(f"restored {chosen} to {restore_run(chosen)}")


@app.command("import", short_help="Import the paper's released weights as a run folder.")
def import_command(
    source: str = typer.Argument(
        ...,
        help="A released checkpoint folder (step_N/), a Hugging Face style model folder, "
        "or a hub id owner/name.",
    ),
    run_dir: Path = typer.Option(
        ..., "--run-dir", "-o", help="The run folder to write; it must not hold a run."
    ),
    tokenizer: Optional[Path] = typer.Option(
        None, "--tokenizer", help="tokenizer.json (default: beside the weights or one folder up)."
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", help="The released config.json (default: beside the weights or one folder up)."
    ),
    weights: str = typer.Option(
        "both", "--weights", help="ema | raw | both: which released weights become the run's."
    ),
):
    """Import the paper's released weights as a run folder that eval, sample and the TUI open."""
    from core.importer import import_released

    done = import_released(source, run_dir, tokenizer=tokenizer, config=config, weights=weights)
    ema = f", EMA weights from {done.ema_from}" if done.ema_from else ""
    only = " (the only weights file there; no EMA weights)" if done.only_file else ""
    print(
        f"imported {source} into {done.run_dir}: {done.parameters:,} parameters, step {done.step}, "
        f"model weights from {done.model_from}{only}{ema}"
    )


def _reporter():
    """One line per logging interval; on a terminal also a live progress bar under the lines."""

    def stamped(line: str) -> str:
        return f"[{time.strftime('%H:%M:%S')}] {line}"

    if not _stdout_is_terminal():
        return lambda line: print(stamped(line), flush=True), None, lambda: None

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console()
    bar = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("train", total=None)
    bar.start()

    def progress(step: int, total: int) -> None:
        bar.update(task, completed=step, total=total)

    return lambda line: console.print(stamped(line), markup=False, highlight=False), progress, bar.stop


@app.command(short_help="List the presets.")
def presets():
    """List the presets, one line each; the bases, which presets extend, last and marked [base]."""
    from core.config import base_names, load_config, preset_names

    names, bases = preset_names(), base_names()
    width = max(map(len, names + bases))
    for name in names:
        print(f"{name:<{width}}  {load_config(name).description}")
    for name in bases:
        print(f"{name:<{width}}  [base] {load_config(name).description}")


@app.command(short_help="The resolved config, its sources and the parameter count.")
def inspect(
    preset: str = typer.Option(..., "--preset", "-p", help="Preset name or YAML file."),
    overrides: List[str] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Print the resolved config, where each value comes from (the preset, a preset it extends, --set
    or the built-in default) and the model's parameter count."""
    from core.config import resolve_config, to_dict, to_yaml_with_sources
    from core.model import count_parameters

    resolved = resolve_config(preset, overrides)
    cfg = resolved.config
    params = count_parameters(cfg.model, cfg.data.vocab_size)
    if as_json:
        report = {"config": to_dict(cfg), "parameters": params}
        report.update(sources=resolved.sources, chain=resolved.chain)
        print(json.dumps(report, indent=2))
    else:
        print(to_yaml_with_sources(resolved).rstrip())
        print(f"# parameters: {params:,}")


@app.command(short_help="A schedule's mean mask rate and NELBO weights.")
def schedule(
    name: str = typer.Argument(..., help=_schedule_help()),
    overrides: List[str] = typer.Option(
        [], "--set", "-s", help="Schedule keys, e.g. --set power=0.1 (the schedule. prefix is optional)."
    ),
    progress: Optional[str] = typer.Option(
        None,
        "--progress",
        help="Training progress points, e.g. 0,0.5,1 (default: 0,0.5,1 for bimodal and other schedules that "
        "move with training, else 0).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Show a schedule's mean mask rate and NELBO weight quantiles, to see what p does before training."""
    from core.config import Config, apply_overrides
    from core.schedules import summarize

    # the names come from SCHEDULES: a schedule registered (by a module imported before) is a choice too
    cfg = apply_overrides(
        Config(),
        [f"schedule.name={name}"] + [o if o.startswith("schedule.") else f"schedule.{o}" for o in overrides],
    )
    try:
        points = (
            [float(p) for p in progress.split(",")]
            if progress
            else ([0.0, 0.5, 1.0] if SCHEDULES.get(name).progressive else [0.0])
        )
    except ValueError:
        raise UserError(f"--progress must be numbers separated by commas, got '{progress}'.") from None
    results = [summarize(cfg.schedule, progress=p) for p in points]
    if as_json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name} schedule, p = {cfg.schedule.power:g}")
    for col in (
        "progress",
        "E\\[r]",
        "w mean",
        "w p1",
        "w p50",
        "w p99",
        "w max",
    ):  # escaped: "[r]" alone would be read as rich markup
        table.add_column(col, justify="right")
    for r in results:
        w = r["weight"]
        table.add_row(
            f"{r['progress']:g}",
            f"{r['mean_rate']:.4f}",
            *(f"{w[k]:.4g}" for k in ("mean", "p1", "p50", "p99", "max")),
        )
    Console().print(table)


@app.command("eval", short_help="Score a checkpoint on zero-shot suites.")
def eval_command(
    target: str = typer.Argument(
        ..., help="A run folder (its latest checkpoint) or a checkpoint folder runs/NAME/checkpoints/step-N."
    ),
    suite: Optional[str] = typer.Option(
        None,
        "--suite",
        help=_suite_help(),
    ),
    data: Optional[str] = typer.Option(
        None,
        "--data",
        help="The BabyLM evaluation_data folder holding blimp_filtered, supplement_filtered, "
        "ewok_filtered, entity_tracking, wug_adj_nominalization, reading, ... "
        "(under full_eval/ or fast_eval/).",
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", help="At most N items per UID, for reading N sentences (default: all)."
    ),
    backend: Optional[str] = typer.Option(
        None, "--backend", help="pll | nelbo (default: the run's eval.backend)."
    ),
    rate_value: Optional[str] = typer.Option(
        None, "--rate-value", help="Time-conditioning input while scoring: a rate or 'realised'."
    ),
    draws: Optional[int] = typer.Option(None, "--draws", help="Monte-Carlo draws of the nelbo backend."),
    weights: str = typer.Option("ema", "--weights", help="ema | raw"),
    on_bad_line: str = typer.Option("refuse", "--on-bad-line", help="refuse | skip a malformed JSONL line."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the reports to this JSON file."),
    predictions_out: Optional[Path] = typer.Option(
        None,
        "--predictions",
        help="Also write one JSON line per scored item (scores, choice, credit) to this file.",
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
):
    """Score a checkpoint on zero-shot suites: a table per UID, per field and the macro average."""
    from core.config import apply_overrides
    from core.evaluate import checkpoint_step, evaluate, load_for_eval, make_scorer, save_report
    from mdlm_tui.eval.metrics import metric_of, print_report, print_summary

    for option, path in (
        ("--json", json_out),
        ("--predictions", predictions_out),
    ):  # before minutes of scoring
        if path is not None and path.is_dir():
            raise UserError(
                f"{option} {path} is a folder; give a file to write, such as {path / 'out.json'}."
            )
        if path is not None and not path.absolute().parent.is_dir():
            raise UserError(
                f"{option} {path}: the folder {path.absolute().parent} does not exist; create it first."
            )

    def warn(m):
        return print(m if m.startswith("warning") else f"warning: {m}", file=sys.stderr)

    model, tokenizer, cfg, ckpt = load_for_eval(target, weights=weights, device=device, warn=warn)
    # eval.weights: the weights loaded, which the saved reports record
    keys = [
        f"eval.{k}={v}"
        for k, v in (("backend", backend), ("rate_value", rate_value), ("draws", draws), ("weights", weights))
        if v is not None
    ]
    cfg = apply_overrides(cfg, keys)  # the same validation and messages as --set
    specs = [part.strip() for part in (suite or cfg.eval.suites).split(",") if part.strip()]
    run_dir, step = ckpt.parent.parent, checkpoint_step(ckpt)
    reports, predictions = [], [] if predictions_out is not None else None
    scored = []  # this command's suite reports, for the babylm summary
    unsaved = None  # why a report could not be saved: said last, once every result is on the screen
    if "dev" in specs:
        specs.remove("dev")
        dev, unsaved = _dev_report(model, cfg, ckpt, run_dir, step)
        reports.append(dev)
    if specs:
        from core.scoring import drop_long_items
        from core.suites import load_suite

        suites = load_suite(
            ",".join(specs), data or cfg.eval.data_dir, limit=limit, on_bad_line=on_bad_line, warn=warn
        )
        device_name = str(next(model.parameters()).device)
        scorer = make_scorer(model, tokenizer, cfg, device_name)
        longest = cfg.model.max_position
        for one in suites:
            if drop_long_items(one, tokenizer, longest):
                print(
                    f"{one.name}: {one.skipped:,} of {one.skipped + len(one.items):,} items skipped, "
                    f"longer than the model's {longest} positions (model.max_position)"
                )
            if not one.items:
                continue
            with _progress_bar(f"{one.name}", len(one.items)) as progress:
                report = evaluate(
                    scorer, one, progress=progress, checkpoint=str(ckpt), predictions=predictions
                )
            if metric_of(report) == "accuracy":
                _print_report(report)
            else:  # a correlation or an R^2 gain: its own header
                print_report(report, None if _stdout_is_terminal() else 120)
            scored.append(report)
            try:
                print(f"report: {save_report(report, run_dir / 'eval', step)}", file=sys.stderr)
            except OSError as e:
                unsaved = unsaved or f"{run_dir / 'eval'} ({e.strerror or e})"
            reports.append({**report.to_dict(), "skipped": one.skipped})
        if not any(one.items for one in suites):
            raise UserError(
                f"Every item is longer than the model's {longest} positions (model.max_position); "
                "nothing was scored."
            )
        if "babylm" in specs:
            print_summary(scored, None if _stdout_is_terminal() else 120)
    if json_out is not None:
        _write_text(json_out, _reports_json(reports))
    if predictions_out is not None:
        _write_lines(predictions_out, predictions)
    if unsaved:
        kept = f"they are kept in {json_out}" if json_out else "pass --json FILE to keep them elsewhere"
        raise UserError(f"The results above could not be saved in {unsaved}; {kept}.")


def _write_lines(path: Path, records: list) -> None:
    _write_text(path, "".join(json.dumps(record) + "\n" for record in records))


def _write_text(path: Path, text: str) -> None:
    from core.runs import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise UserError(f"Cannot write {path}: {e.strerror or e}.") from None


def _reports_json(reports: list[dict]) -> str:
    """One report as an object, several as a list; each indented, its item credits one line per UID."""
    from core.eval_report import report_json

    texts = [(report_json(r) if r.get("credits") else json.dumps(r, indent=2)).rstrip() for r in reports]
    return texts[0] + "\n" if len(texts) == 1 else "[\n" + ",\n".join(texts) + "\n]\n"


def _dev_report(model, cfg, ckpt, run_dir: Path, step) -> tuple[dict, str | None]:
    """The dev NELBO, printed, and why it could not be saved (None when it was): the suites after it
    are still scored and the failure said once at the end."""
    from core.eval_report import describe_dev
    from core.evaluate import dev_report, save_dev_report

    result = dev_report(model, cfg, ckpt, log=lambda m: print(m, file=sys.stderr))
    print(
        f"{describe_dev(result)} ({result['dev_tokens']:,} tokens, {result['dev_sequences']} sequences, "
        f"seed {result['dev_seed']})"
    )
    try:  # printed first: a read-only run folder still shows the result
        save_dev_report(result, run_dir / "eval", step)
    except OSError as e:
        return result, f"{run_dir / 'eval'} ({e.strerror or e})"
    return result, None


class _progress_bar:
    """A rich progress bar on a terminal, nothing otherwise; usable as evaluate's progress callback."""

    def __init__(self, label: str, total: int):
        self.bar = None
        if _stdout_is_terminal():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
            )
            self.task = self.bar.add_task(label, total=total)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


def _print_report(report) -> None:
    from rich.console import Console
    from rich.table import Table

    limit = f", at most {report.limit} items a UID" if report.limit else ""
    table = Table(
        title=f"{report.suite} ({report.backend}, {report.n:,} items{limit}, {report.seconds:.0f} s)"
    )
    for name, justify in (("UID", "left"), ("field", "left"), ("n", "right"), ("accuracy", "right")):
        table.add_column(name, justify=justify)
    for uid, row in sorted(report.per_uid.items()):
        table.add_row(uid, row.get("field") or "", str(row["n"]), f"{100 * row['accuracy']:.1f}")
    table.add_section()
    for field, accuracy in sorted(report.per_field.items()):
        table.add_row(f"field: {field}", "", "", f"{100 * accuracy:.1f}")
    table.add_row("macro average", "", str(report.n), f"{100 * report.macro:.1f}", style="bold")
    Console(width=None if _stdout_is_terminal() else 120).print(table)


@app.command(short_help="Generate text by iterative unmasking.")
def sample(
    target: str = typer.Argument(
        ..., help="A run folder (its latest checkpoint) or a checkpoint folder runs/NAME/checkpoints/step-N."
    ),
    length: int = typer.Option(64, "--length", help="Tokens in the sample, <s> included."),
    steps: int = typer.Option(32, "--steps", help="Unmasking steps."),
    sampler: str = typer.Option(
        "ancestral",
        "--sampler",
        help=_sampler_help(),
    ),
    seed: int = typer.Option(0, "--seed"),
    prompt: Optional[str] = typer.Option(
        None,
        "--prompt",
        help="A prefix, or an infill template with <mask> or <mask>*N where tokens are to be filled.",
    ),
    temperature: float = typer.Option(1.0, "--temperature", help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p"),
    schedule_name: str = typer.Option(
        "linear",
        "--schedule",
        help=_sampling_schedule_help(),
    ),
    trace: Optional[Path] = typer.Option(
        None, "--trace", help="Write every step's state as JSON lines to this file."
    ),
    weights: str = typer.Option("ema", "--weights", help="ema | raw"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
):
    """Generate text by iterative unmasking and print it (live, step by step, on a terminal)."""
    from core.evaluate import load_for_eval
    from core.sampling import MASK_TEXT, SampleConfig, check_config, trace_to_jsonl
    from core.sampling import sample as run_sampler

    if trace is not None and trace.is_dir():
        raise UserError(
            f"--trace {trace} is a folder; give a file to write, such as {trace / 'trace.jsonl'}."
        )
    cfg = SampleConfig(
        length=length,
        steps=steps,
        sampler=sampler,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        schedule=schedule_name,
    )
    check_config(cfg)  # an unknown sampler is refused, with the registered ones, before the model loads
    model, tokenizer, _, ckpt = load_for_eval(
        target, weights=weights, device=device, warn=lambda m: print(m, file=sys.stderr)
    )
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

        def on_step(step):
            return live.update(
                Text(f"step {step.step}/{steps}, {step.masked} masked\n") + styled(step.text), refresh=True
            )

        finish = live.stop
    try:
        result = run_sampler(
            model, tokenizer, cfg, prompt=prompt, device=str(next(model.parameters()).device), on_step=on_step
        )
    finally:
        finish()
    print(result.text)
    if trace is not None:
        try:
            trace_to_jsonl(result, trace)
        except OSError as e:
            raise UserError(f"The sample above could not be traced to {trace} ({e.strerror or e}).") from None
    print(f"({ckpt}, {result.forward_passes} forward passes, {result.seconds:.2f} s)", file=sys.stderr)


@app.command("export", short_help="Write a Hugging Face model folder for the BabyLM pipeline.")
def export_command(
    target: str = typer.Argument(
        ..., help="A run folder (its latest checkpoint) or a checkpoint folder runs/NAME/checkpoints/step-N."
    ),
    out: Path = typer.Argument(..., help="The folder to write; it must not exist yet, or be empty."),
    weights: str = typer.Option("ema", "--weights", help="ema | raw"),
    milestones: bool = typer.Option(
        False,
        "--milestones",
        help="Write OUT/main (the latest checkpoint) and one folder per milestone checkpoint "
        "(checkpoints/chck_*), each a hub revision.",
    ),
):
    """Write a Hugging Face model folder (config.json, modeling file, safetensors, tokenizer) for the
    BabyLM pipeline."""
    from core.export import export

    written = export(
        target, out, weights=weights, milestones=milestones, log=lambda m: print(m, file=sys.stderr)
    )
    for folder in written:
        print(folder)


app.command("compare", short_help="Compare runs and sweeps, with bootstrap intervals.")(compare)


app.command("sweep", short_help="Run a grid of runs and evaluate each.")(sweep_cli.sweep)


def _worker_prefix() -> str:
    """'worker N: ' in a worker other than the first of a launched run (whose lines interleave), else ''."""
    rank = os.environ.get("RANK", "0")
    return f"worker {rank}: " if "TORCHELASTIC_RUN_ID" in os.environ and rank != "0" else ""


def _show_notes(message, category, *args, **kwargs) -> None:
    """A renamed config key is a note on stderr, once, from the first worker only; other warnings as usual."""
    from core.config import RenamedKey

    if not issubclass(category, RenamedKey):
        _show_warning(message, category, *args, **kwargs)
    elif not _worker_prefix():
        print(f"note: {message}", file=sys.stderr)


def _refresh_choice_help() -> None:
    import inspect

    for command, parameter, build in (
        (schedule, "name", _schedule_help),
        (eval_command, "suite", _suite_help),
        (sample, "sampler", _sampler_help),
        (sample, "schedule_name", _sampling_schedule_help),
    ):
        inspect.signature(command).parameters[parameter].default.help = build()


def main() -> None:
    warnings.showwarning = _show_notes
    try:
        if load_plugins():  # before any config is read: a plugin's names are then valid everywhere
            _refresh_choice_help()
        app()
    except (UserError, TrainingFailed) as e:
        print(f"{_worker_prefix()}error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
