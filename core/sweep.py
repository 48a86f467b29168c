"""A sweep: one YAML file naming many runs of one recipe, and the index of their run folders.

    description: schedules on the smoke recipe
    base: smoke                      # the preset every run starts from: a name, or a file beside this one
    set: {train.budget: 60 steps}    # overrides for every run
    grid: {schedule.name: [linear, cosine]}      # every combination of these values is a run
    runs: [{schedule.name: bimodal, schedule.power: 0}]   # rows that are not a grid
    seeds: [0, 1]                    # each row once per seed (seed=...)
    suites: [builtin]                # evaluated after each run (`mdlm-tui eval RUN --suite ...`,
                                     # with --limit eval.limit when the run sets one)
    data: path/to/evaluation_data    # their data folder (default: each run's eval.data_dir)
    scales: {small: {base: cpu-small, set: {...}}, paper: {base: paper}}
    scale: small                     # the scale without --scale (default: the first)

A run's config is, in this order: the base preset, `set:`, its row (its `runs:` item, its grid
combination and its seed), then the chosen scale's `set:`, which comes last so that a scale holds every
run to its size. With both `runs:` and `grid:`, each `runs:` item is combined with every grid combination.
Each run is named by the values of the keys that tell the runs apart (`bimodal-p0-uniform-seed1`), or by
a `name:` in its `runs:` item.

The index, sweep.json in the sweep folder (beside sweep.yaml, the file as it was run), is what other
tools read; it is replaced whole at every event:
    {"name": <sweep file name>[-<scale>], "file": "sweep.yaml", "source": the sweep file's path,
     "scale": its name or null,
     "sweep": {the sweep file resolved: description, base, scale, set, scale_set, grid, runs, seeds,
               suites, data},
     "runs": [{"name", "path" (its run folder, relative to the sweep folder), "overrides" (its row),
               "settings" (every key=value it gets), "state" (pending | running | finished | failed |
               stopped | evaluated), "error" (why it failed, one sentence, or null), "step", "loss",
               "eval" ({suite: macro accuracy}), "eval_suites"}]}
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import Config, base_names, load_config, preset_dir, read_yaml
from core.errors import UserError

KEYS = ("description", "base", "set", "grid", "runs", "seeds", "suites", "data", "scales", "scale")
SCALE_KEYS = ("base", "set", "description")
STATES = ("pending", "running", "finished", "failed", "stopped", "evaluated")
INDEX = "sweep.json"
COPY = "sweep.yaml"  # the sweep file as it was run, kept in the sweep folder
SHIPPED = "sweeps"  # presets/sweeps/: the sweeps a name finds
SHORT = {"schedule.power": "p", "seed": "seed", "masking.p_freq": "pfreq"}  # name parts of numbers


@dataclass
class PlannedRun:
    name: str
    overrides: dict[str, Any]  # its row: what sets it apart from the other runs
    settings: list[str]  # every key=value the run gets, in the order they apply (and name=<its name>)
    config: Config


@dataclass
class Plan:
    file: Path
    scale: str | None
    base: str  # as the sweep file names it
    preset: str  # what `mdlm-tui run --preset` gets
    content: dict  # the sweep file resolved: the scale chosen, maps flattened
    runs: list[PlannedRun]
    suites: list[str] = field(default_factory=list)
    data: str | None = None

    @property
    def default_dir(self) -> Path:
        """runs/<sweep file name>[-<scale>], beside the runs `mdlm-tui run` makes by default."""
        return Path("runs") / (self.file.stem + (f"-{self.scale}" if self.scale else ""))


def sweep_path(spec: str) -> Path:
    """A sweep file, or the name of a shipped one (presets/sweeps/NAME.yaml)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    shipped = preset_dir() / SHIPPED / f"{spec}.yaml"
    if path.suffix not in (".yaml", ".yml") and shipped.is_file():
        return shipped
    raise UserError(f"Sweep file {spec} does not exist.")


def load_plan(spec: str, scale: str | None = None, extra: list[str] | None = None) -> Plan:
    """Read, check and expand a sweep file: every run's config resolved as `mdlm-tui run` would.
    `extra`: the command line's --set KEY=VALUE, for every run, after the file's set: (a data path
    that differs from machine to machine need not be written into the file)."""
    path = sweep_path(spec)
    shown = path.name
    data = read_yaml(path)
    for key in data:
        if key not in KEYS:
            raise UserError(f"{shown} has an unknown key '{key}'{_hint(str(key), KEYS)}; {_keys_said()}.")
    chosen, scale_data = _scale(data, scale, shown)
    where_base = f"scales.{chosen}.base" if "base" in scale_data else "base"
    base = scale_data.get("base", data.get("base"))
    if not isinstance(base, str) or not base.strip():
        raise UserError(f"{shown} needs base: the preset every run starts from, such as `base: smoke`.")
    preset = _preset(base.strip(), path)
    try:
        load_config(preset)
    except UserError as e:
        raise UserError(f"{shown}, {where_base}: {e}") from None
    common = _overrides(data.get("set"), f"{shown}, set")
    scaled = _overrides(scale_data.get("set"), f"{shown}, scales.{chosen}.set") if chosen else {}
    given = _command_line_sets(extra or [])
    rows = _rows(data, shown)
    grid = _flat(data.get("grid") or {})
    for where, fixed, drop in ((f"scales.{chosen}.set", scaled, "the scale"), ("--set", given, "--set")):
        varied = [key for key in fixed if key in grid or (key == "seed" and data.get("seeds"))]
        if varied:
            raise UserError(f"{shown}: {where} sets {varied[0]}, which the runs vary; drop it from {drop}.")
    names = _names(rows, shown, Path(base).stem, [*grid, *(["seed"] if data.get("seeds") else [])])
    planned = []
    for (row, origin), name in zip(rows, names):
        settings = [*_settings(common), *_settings(given), *_settings(row), *_settings(scaled)]
        try:
            cfg = load_config(preset, [*settings, f"name={name}"])
        except UserError as e:
            sources = [(common, "set"), (given, "--set"), (grid, "grid")]
            sources += [({"seed": 0} if data.get("seeds") else {}, "seeds")]
            sources += [(row, origin), (scaled, f"scales.{chosen}.set")]
            raise UserError(f"{shown}, {_place(str(e), sources) or f'run {name}'}: {e}") from None
        planned.append(PlannedRun(name, row, settings, cfg))
    suites = _suites(data.get("suites"), shown)
    eval_data = data.get("data")
    if eval_data is not None and not isinstance(eval_data, str):
        raise UserError(f"{shown}: data must be the evaluation data folder, a path.")
    content = {
        "description": data.get("description") or "",
        "base": base,
        "scale": chosen,
        "set": common,
        "command_line_set": given,
        "scale_set": scaled,
        "grid": grid,
        "runs": [_flat(item) for item in data.get("runs") or []],
        "seeds": data.get("seeds") or [],
        "suites": suites,
        "data": eval_data,
    }
    return Plan(path, chosen, base, preset, content, planned, suites, eval_data)


def select(plan: Plan, patterns: list[str]) -> list[str]:
    """The names of the runs --only picks, in the order its patterns are given (shell-style, e.g.
    'cosine-*'; commas separate several), so the runs that matter most can train first; every run
    when none is given."""
    wanted = [p.strip() for pattern in patterns for p in pattern.split(",") if p.strip()]
    names = [run.name for run in plan.runs]
    if not wanted:
        return names
    chosen: list[str] = []
    for pattern in wanted:
        matched = fnmatch.filter(names, pattern)
        if not matched:
            raise UserError(
                f"--only {pattern} matches no run of {plan.file.name}{_hint(pattern, names)}; "
                "its runs are " + ", ".join(names) + "."
            )
        chosen += [name for name in matched if name not in chosen]
    return chosen


def _keys_said() -> str:
    return "a sweep file holds " + ", ".join(KEYS[:-1]) + f" and {KEYS[-1]}"


def _hint(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _scale(data: dict, wanted: str | None, shown: str) -> tuple[str | None, dict]:
    """The chosen scale's name and its mapping: --scale, else `scale:`, else the first."""
    scales = data.get("scales")
    if scales is None:
        if wanted is not None:
            raise UserError(f"--scale {wanted} was given, but {shown} defines no scales.")
        if "scale" in data:
            raise UserError(
                f"{shown} names a default scale but defines no scales: add scales: or drop scale:."
            )
        return None, {}
    if not isinstance(scales, dict) or not scales:
        raise UserError(f"{shown}: scales must map each scale's name to its base: and set:.")
    name = wanted if wanted is not None else data.get("scale", next(iter(scales)))
    if name not in scales:
        said = "--scale" if wanted is not None else "scale"
        raise UserError(
            f"{shown}: {said} '{name}' is not one of its scales{_hint(str(name), map(str, scales))}: "
            f"{', '.join(map(str, scales))}."
        )
    chosen = scales[name] or {}
    if not isinstance(chosen, dict):
        raise UserError(f"{shown}: scales.{name} must be a mapping with base: and set:.")
    for key in chosen:
        if key not in SCALE_KEYS:
            raise UserError(
                f"{shown} has an unknown key 'scales.{name}.{key}'{_hint(str(key), SCALE_KEYS)}; "
                "a scale holds base, set and description."
            )
    return str(name), chosen


def _preset(base: str, sweep_file: Path) -> str:
    """What `run --preset` gets for `base:`: a shipped name, or a file found beside the sweep file. A
    base recipe (paper) is passed as its file: a sweep's rows complete it, as a preset extending it would."""
    if base.endswith((".yaml", ".yml")) or "/" in base:
        path = Path(base).expanduser()
        path = path if path.is_absolute() else sweep_file.parent / path
        return str(path.resolve()) if path.is_file() else base
    if base in base_names():
        return str(preset_dir() / f"{base}.yaml")
    return base


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """A mapping with dotted keys: `train: {budget: 60 steps}` and `train.budget: 60 steps` alike."""
    if not isinstance(data, dict):
        return {}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _command_line_sets(pairs: list[str]) -> dict[str, str]:
    """--set KEY=VALUE pairs as a mapping; the values are checked with the config, run by run."""
    found = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise UserError(f"--set {pair} must be KEY=VALUE, such as --set data.path=/data/train_10M.")
        found[key.strip()] = value.strip()
    return found


def _overrides(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{where} must map config keys to values, such as `train.budget: 60 steps`.")
    flat = _flat(data)
    for key, value in flat.items():
        if isinstance(value, list):
            raise UserError(f"{where}: {key} must be one value; a list of values to try belongs in grid:.")
    return flat


def _rows(data: dict, shown: str) -> list[tuple[dict[str, Any], str]]:
    """Every run's row (its overrides), with where in the file the row comes from."""
    grid, items, seeds = data.get("grid"), data.get("runs"), data.get("seeds")
    if grid is None and items is None:
        raise UserError(f"{shown} has neither grid: nor runs:; list the values to try under grid:.")
    combos: list[dict[str, Any]] = [{}]
    if grid is not None:
        if not isinstance(grid, dict) or not grid:
            raise UserError(f"{shown}: grid is empty; give each key to vary a list of values.")
        flat = _flat(grid)
        for key, values in flat.items():
            if not isinstance(values, list) or not values:
                raise UserError(
                    f"{shown}: grid {key} must be a non-empty list of values, such as [linear, cosine]."
                )
            if any(isinstance(v, (list, dict)) for v in values):
                raise UserError(f"{shown}: grid {key} must list single values.")
            twice = next((v for i, v in enumerate(values) if v in values[:i]), _ABSENT)
            if twice is not _ABSENT:
                raise UserError(f"{shown}: grid {key} lists {twice!r} twice; give each value once.")
        combos = [dict(zip(flat, values)) for values in itertools.product(*flat.values())]
    listed: list[tuple[dict[str, Any], str]] = [({}, "grid")]
    if items is not None:
        if not isinstance(items, list) or not items:
            raise UserError(f"{shown}: runs must be a non-empty list of override maps.")
        listed = []
        for i, item in enumerate(items, 1):
            origin = f"runs item {i}"
            if not isinstance(item, dict):
                raise UserError(f"{shown}: {origin} must be a map of config keys to values.")
            row = _overrides(item, f"{shown}, {origin}")
            both = [key for key in row if grid is not None and key in _flat(grid)]
            if both:
                raise UserError(
                    f"{shown}: {origin} sets {both[0]}, which grid varies; keep it in one of them."
                )
            listed.append((row, origin))
    rows = [({**row, **combo}, origin) for row, origin in listed for combo in combos]
    if seeds is None:
        return rows
    if not isinstance(seeds, list) or not seeds:
        raise UserError(f"{shown}: seeds must be a non-empty list of integers, such as [0, 1, 2].")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise UserError(f"{shown}: seeds must be integers, such as [0, 1, 2].")
    if any("seed" in row for row, _ in rows):
        raise UserError(f"{shown}: seeds is given, so seed must not be set in grid: or runs: as well.")
    return [({**row, "seed": seed}, origin) for row, origin in rows for seed in seeds]


def _names(rows: list[tuple[dict[str, Any], str]], shown: str, fallback: str, spread: list[str]) -> list[str]:
    """Readable, stable names: the short values of the fewest keys that tell the runs apart, taken in
    the file's order (runs: keys, then grid keys, then the seed), so that a key which always follows
    another (a bimodal row's sequence length) is left out. A `name:` in a runs: item stands for that
    item's values; the values its grid combination and seed add (`spread`) still follow it."""
    plain = [{k: v for k, v in row.items() if k != "name"} for row, _ in rows]
    keys = list(dict.fromkeys(k for row in plain for k in row))
    # runs: keys, then grid keys, then seeds; a stable sort keeps the file's order within each
    keys.sort(key=lambda k: (k in spread, k in spread and k == "seed"))
    chosen: list[str] = []
    distinct = 1
    for key in keys:
        count = len({tuple(_part(k, row.get(k, _ABSENT)) for k in [*chosen, key]) for row in plain})
        if count > distinct:
            chosen, distinct = [*chosen, key], count
    names, seen = [], {}
    for (row, origin), values in zip(rows, plain):
        given = row.get("name")
        if given is not None:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", str(given)):
                raise UserError(
                    f"{shown}: {origin} names its run '{given}'; a name is letters, digits, '.', '_', '+' "
                    "and '-', starting with a letter or digit."
                )
            name = "-".join(
                [str(given), *(_part(k, values[k]) for k in chosen if k in spread and k in values)]
            )
        else:
            parts = [_part(k, values[k]) for k in (chosen if len(rows) > 1 else values) if k in values]
            name = "-".join(parts) or fallback
        if name in seen:
            raise UserError(
                f"{shown}: two runs would be named '{name}' ({seen[name]} and {origin}); "
                "make their values differ or give each a name: under runs:."
            )
        seen[name] = origin
        names.append(name)
    return names


_ABSENT = object()


def _part(key: str, value: Any) -> str:
    """A value's piece of a run name: linear, p0.1, seed1, no-curriculum, 60steps."""
    if value is _ABSENT:
        return ""
    last = key.rpartition(".")[2]
    if isinstance(value, bool):
        text = last if value else f"no-{last}"
    elif value is None:
        text = f"no-{last}"
    elif isinstance(value, (int, float)):
        text = f"{SHORT.get(key, last)}{value:g}"
    else:
        text = str(value)
        text = Path(text).name or text if "/" in text else text
    return re.sub(r"[^A-Za-z0-9._+-]+", "", text.replace(" ", "")).strip(".-") or last


def _value(value: Any) -> str:
    """A value as `--set key=value` reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def _settings(overrides: dict[str, Any]) -> list[str]:
    return [f"{key}={_value(value)}" for key, value in overrides.items() if key != "name"]


def _place(message: str, sources: list[tuple[dict[str, Any], str]]) -> str | None:
    """Where in the sweep file the key a config message names first was set: `grid schedule.name`."""
    found = []
    for rank, (overrides, origin) in enumerate(sources):
        for key in overrides:
            match = re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", message)
            if match:
                found.append((match.start(), rank, key, origin))
    if not found:
        return None
    _, _, key, origin = min(found)
    return origin if origin == "seeds" else f"{origin}{',' if ' ' in origin else ''} {key}"


def _suites(value: Any, shown: str) -> list[str]:
    """The suites as a list: a YAML list or a comma-separated string; each must be one eval knows."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise UserError(f"{shown}: suites must be a list of suite names, such as [blimp, supplement].")
    specs = [v.strip() for v in value if v.strip()]
    from core.suites import find_kind

    for spec in specs:
        if spec != "dev":  # the dev-split NELBO, which `mdlm-tui eval` scores itself
            try:
                find_kind(spec)
            except UserError as e:
                raise UserError(f"{shown}, suites: {e}") from None
    return specs


def missing_suite_data(plan: Plan) -> str | None:
    """Why a suite cannot be found for some run (its BabyLM folder missing), or None: said before the
    runs train, not hours later when they are evaluated."""
    from core.suites import LAYOUT_FOLDERS, find_kind, find_layout_folder

    for run in plan.runs:
        folder = plan.data or run.config.eval.data_dir
        for spec in plan.suites:
            name = find_kind(spec).name if spec != "dev" else spec
            if name in LAYOUT_FOLDERS and find_layout_folder(name, folder) is None:
                return (
                    f"{plan.file.name}: suite {spec} needs {LAYOUT_FOLDERS[name]}/ under "
                    f"{folder or 'the current folder'}; set data: (or eval.data_dir under set:) to the "
                    "BabyLM evaluation_data folder"
                )
    return None


# ---------------------------------------------------------------- the index


def read_index(folder: Path) -> dict[str, dict]:
    """The runs sweep.json recorded, by name; {} when there is none or it cannot be read."""
    try:
        data = json.loads((Path(folder) / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list):
        return {}
    return {r["name"]: r for r in runs if isinstance(r, dict) and isinstance(r.get("name"), str)}


def new_record(run: PlannedRun) -> dict:
    return {
        "name": run.name,
        "path": run.name,
        "overrides": run.overrides,
        "settings": run.settings,
        "state": "pending",
        "error": None,
        "step": None,
        "loss": None,
        "eval": {},
        "eval_suites": [],
    }


def write_index(folder: Path, plan: Plan, records: list[dict]) -> None:
    from core.runs import atomic_write_json

    atomic_write_json(
        Path(folder) / INDEX,
        {
            "name": plan.default_dir.name,
            "file": COPY,
            "source": str(plan.file.resolve()),
            "scale": plan.scale,
            "sweep": plan.content,
            "runs": records,
        },
    )
