"""Checkpoints: checkpoints/step-N/ folders and a `latest` pointer written last.

A checkpoint is built in a temporary folder, fsynced and renamed into place; only then is
`latest` replaced. A crash at any moment leaves `latest` naming a complete checkpoint. Each file's
size is recorded in meta.json, so a truncated file is caught before torch or safetensors sees it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from core.errors import UserError
from core.runs import atomic_write_json, atomic_write_text

FORMAT = 1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def step_dirs(root: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    found = []
    for d in Path(root).glob("step-*"):
        if d.is_dir() and d.name[5:].isdigit():
            found.append(d)
    return sorted(found, key=lambda d: int(d.name[5:]))


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, ema_state: dict | None,
                    optimizer: torch.optim.Optimizer, state: dict, keep: int) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    if ema_state is not None:
        save_file({k: v.contiguous() for k, v in ema_state["shadow"].items()}, str(tmp / "ema.safetensors"))
        state = {**state, "ema": {k: v for k, v in ema_state.items() if k != "shadow"}}
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(state, tmp / "state.pt")
    sizes = {p.name: p.stat().st_size for p in tmp.iterdir()}
    atomic_write_json(tmp / "meta.json", {"format": FORMAT, "step": step, "sizes": sizes})
    for p in tmp.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    atomic_write_text(root / "latest", final.name + "\n")
    for old in step_dirs(root)[:-keep] if keep > 0 else []:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def verify(ckpt: Path) -> None:
    """Raise ValueError when a checkpoint folder is incomplete or a file was truncated."""
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"meta.json unreadable ({e})") from None
    for name, size in meta["sizes"].items():
        path = ckpt / name
        if not path.is_file():
            raise ValueError(f"{name} is missing")
        if path.stat().st_size != size:
            raise ValueError(f"{name} is {path.stat().st_size} bytes, expected {size}")


def latest_checkpoint(root: Path) -> Path | None:
    root = Path(root)
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if named.is_dir():
            return named
    dirs = step_dirs(root)
    return dirs[-1] if dirs else None


def load_checkpoint(ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    device: torch.device) -> tuple[dict, dict | None]:
    """Load weights (and optimizer) in place; returns (state, ema shadow or None)."""
    verify(ckpt)
    missing, unexpected = load_model(model, str(ckpt / "model.safetensors"), strict=False, device=str(device))
    if missing or unexpected:
        raise ValueError(f"weights do not fit this model (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True))
    ema = None
    if (ckpt / "ema.safetensors").is_file():
        ema = {**state.get("ema", {}), "shadow": load_file(str(ckpt / "ema.safetensors"), device=str(device))}
    return state, ema


def load_latest(root: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                device: torch.device, warn: Callable[[str], None]) -> tuple[Path, dict, dict | None]:
    """Load the newest loadable checkpoint, falling back past damaged ones with a warning."""
    root = Path(root)
    first = latest_checkpoint(root)
    if first is None:
        raise UserError(f"No checkpoint to resume from in {root}.")
    candidates = [first] + [d for d in reversed(step_dirs(root)) if int(d.name[5:]) < int(first.name[5:])]
    for ckpt in candidates:
        try:
            state, ema = load_checkpoint(ckpt, model, optimizer, device)
            return ckpt, state, ema
        except Exception as e:  # a damaged checkpoint of any kind: try the one before it
            warn(f"checkpoint {ckpt.name} is damaged ({e}); trying the previous one")
    raise UserError(f"Every checkpoint in {root} is damaged; nothing to resume from.")
