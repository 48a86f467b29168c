"""Checkpoints: checkpoints/step-N/ folders and a `latest` pointer written last.

Milestone checkpoints (checkpoints/chck_<words>, train.save_at_words) have the same format; `latest`
never names them and rotation never deletes them, so resuming always starts from a step-N folder.

A checkpoint is built in a temporary folder, fsynced and renamed into place; only then is
`latest` replaced. A crash at any moment leaves `latest` naming a complete checkpoint; a save that
fails (a full disk) removes its temporary folder and leaves the previous checkpoint as `latest`.
meta.json records each file's size and sha256, so a truncated or overwritten file is caught before
torch or safetensors sees it (checkpoints written before checksums are checked by size only).
Nothing loaded can run code: weights are safetensors, the rest `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Callable, Collection

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from core.config import MILESTONE_PREFIX
from core.errors import TrainingFailed, UserError
from core.runs import STEP_NAME, atomic_write_json, sha256_file, step_dirs

FORMAT = 2  # 2: meta.json holds sha256 checksums (and the tokenizer's) beside the sizes


class UnsafeCheckpoint(UserError):
    """A checkpoint file that holds more than tensors and plain values: refused, never unpickled."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _step(folder: Path) -> int:
    return int(folder.name[5:])


# ---------------------------------------------------------------- saving


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    ema_state: dict | None,
    optimizer: torch.optim.Optimizer,
    state: dict,
    keep: int,
    *,
    tokenizer: Path | None = None,
    protect: Path | None = None,
    milestone: str | None = None,
    info: dict | None = None,
) -> Path:
    """Write step-N, point `latest` at it, then prune to `keep` folders (never `protect`); or, given
    `milestone`, write that folder alone. `tokenizer`: the tokenizer.json trained with, whose sha256
    loaders compare with theirs. `info`: plain values added to meta.json (the words seen)."""
    root = Path(root)
    name = milestone or f"step-{step}"
    tmp = root / f".{name}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
        tmp.mkdir()
        _write_folder(tmp, step, model, ema_state, optimizer, state, tokenizer, info)
        final = _publish(root, tmp, name, point_latest=milestone is None)
    except BaseException as e:
        reason = write_failure(e) if isinstance(e, Exception) else None
        removed = reason is not None and _folder_removed(root, tmp, reason)  # before rmtree takes tmp
        shutil.rmtree(tmp, ignore_errors=True)  # frees the space a full disk needs for status.json
        if reason is None:
            raise
        if removed:  # disk-space advice would send the user looking for a problem they do not have
            raise TrainingFailed(
                f"Saving checkpoint {name} in {root} failed ({reason}); the run folder was removed "
                "while it trained."
            ) from None
        previous = _pointed(root)
        kept = (
            f"{previous.name} is still the latest checkpoint"
            if previous
            else "no checkpoint was saved before"
        )
        raise TrainingFailed(
            f"Saving checkpoint {name} in {root} failed ({reason}); {kept}: "
            "free some space, then continue the run with --resume."
        ) from None
    if milestone is None:
        _rotate(root, keep, final, protect)
    return final


def _folder_removed(root: Path, tmp: Path, reason: str) -> bool:
    """Whether a save failed because its folders were deleted under it, not because a write was
    refused: a missing tokenizer also says ENOENT, but leaves both folders in place. By the text,
    since safetensors reports the OS error only as text."""
    return reason.startswith(os.strerror(errno.ENOENT)) and not (root.is_dir() and tmp.is_dir())


def _remove_leftovers(root: Path) -> None:
    """Temporary folders and pointers of a save that was killed or failed before it could clean up."""
    patterns = (".step-*.tmp", f".{MILESTONE_PREFIX}*.tmp", ".latest*.tmp")
    for leftover in [path for pattern in patterns for path in root.glob(pattern)]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _torch_save(obj, path: Path) -> None:
    # Through a Python file, so a full disk surfaces as OSError(ENOSPC) in the error's context.
    with open(path, "wb") as f:
        torch.save(obj, f)


def _write_folder(
    tmp: Path,
    step: int,
    model,
    ema_state: dict | None,
    optimizer,
    state: dict,
    tokenizer: Path | None,
    info: dict | None = None,
) -> None:
    save_model(model, str(tmp / "model.safetensors"))
    if ema_state is not None:
        save_file({k: v.contiguous() for k, v in ema_state["shadow"].items()}, str(tmp / "ema.safetensors"))
        state = {**state, "ema": {k: v for k, v in ema_state.items() if k != "shadow"}}
    _torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
    _torch_save(state, tmp / "state.pt")
    files = sorted(tmp.iterdir())
    meta = {
        "format": FORMAT,
        "step": step,
        **(info or {}),
        "sizes": {p.name: p.stat().st_size for p in files},
        "sha256": {p.name: sha256_file(p) for p in files},
    }
    if tokenizer is not None:
        meta["tokenizer_sha256"] = sha256_file(tokenizer)
    atomic_write_json(tmp / "meta.json", meta)
    for p in tmp.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())


def _publish(root: Path, tmp: Path, name: str, point_latest: bool = True) -> Path:
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    if point_latest:
        _write_latest(root, final.name)
    return final


def _write_latest(root: Path, name: str) -> None:
    """Replace `latest` atomically; a failed write leaves no temporary file behind."""
    tmp = root / ".latest.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / "latest")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(root)


def write_failure(error: BaseException) -> str | None:
    """Why a save failed when the file system refused a write (a full disk, permissions); None for
    anything else, which is a bug and keeps its traceback."""
    while error is not None:
        if isinstance(error, OSError):
            return error.strerror or str(error) or type(error).__name__
        if "I/O error: " in str(error):  # safetensors reports the OS error only in its text
            return str(error).split("I/O error: ", 1)[1].splitlines()[0]
        error = error.__cause__ or error.__context__
    return None


def _rotate(root: Path, keep: int, final: Path, protect: Path | None) -> None:
    """Delete folders past `keep`: first damaged ones and those ahead of `final` (left by a timeline
    abandoned when a resume fell back past them), then the oldest; never `final` or `protect`."""
    if keep <= 0:
        return
    dirs = step_dirs(root)
    spared = {final.name, protect.name if protect is not None else None}
    victims = sorted(
        (d for d in dirs if d.name not in spared),
        key=lambda d: (_is_whole(d) and _step(d) < _step(final), _step(d)),
    )
    for old in victims[: max(0, len(dirs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- checking


def read_meta(ckpt: Path) -> dict:
    try:
        meta = json.loads((Path(ckpt) / "meta.json").read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"meta.json unreadable ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sizes"), dict):
        raise ValueError("meta.json lists no files")
    return meta


def verify(ckpt: Path, checksums: bool = True, skip: Collection[str] = ()) -> None:
    """Raise ValueError naming the first file that is missing, truncated or (with checksums) altered;
    files in `skip` are not checked (a reader that never loads them need not hash them, nor fail
    when they are gone)."""
    meta = read_meta(ckpt)
    for name, size in meta["sizes"].items():
        if name in skip:
            continue
        path = Path(ckpt) / str(name)
        if path.parent != Path(ckpt) or not path.is_file():  # a name like ../x points outside the folder
            raise ValueError(f"{name} is missing")
        if path.stat().st_size != size:
            raise ValueError(f"{name} is {path.stat().st_size} bytes, expected {size}")
    sums = meta.get("sha256") if checksums else None
    for name, digest in (sums if isinstance(sums, dict) else {}).items():
        if name in skip:
            continue
        if name not in meta["sizes"] or sha256_file(Path(ckpt) / name) != digest:
            raise ValueError(f"{name} does not match its sha256 in meta.json")


def _is_whole(ckpt: Path) -> bool:
    """Every file present at its recorded size (no hashing: cheap enough to ask of every folder)."""
    try:
        verify(ckpt, checksums=False)
        return True
    except ValueError:
        return False


def tokenizer_matches(ckpt: Path, tokenizer: Path) -> bool:
    """Whether `tokenizer` is the file the checkpoint was trained with (True when it recorded none)."""
    expected = read_meta(ckpt).get("tokenizer_sha256")
    return expected is None or sha256_file(tokenizer) == expected


def snapshot_id(ckpt: Path) -> tuple | None:
    """What changes when a checkpoint folder is deleted or replaced: tells a race from real damage."""
    try:
        st = (Path(ckpt) / "meta.json").stat()
    except OSError:
        return None
    return str(ckpt), st.st_ino, st.st_mtime_ns


# ---------------------------------------------------------------- finding and loading


def _pointed(root: Path) -> Path | None:
    """The folder `latest` names, or None when it is missing, garbled or names no checkpoint folder."""
    try:
        name = (Path(root) / "latest").read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    folder = Path(root) / name
    return folder if STEP_NAME.fullmatch(name) and folder.is_dir() else None


def latest_checkpoint(root: Path) -> Path | None:
    """The folder `latest` names; without a usable pointer, the newest whole step-N (or the newest
    at all, so that loading it says what is wrong)."""
    named = _pointed(root)
    if named is not None:
        return named
    dirs = step_dirs(root)
    whole = [d for d in dirs if _is_whole(d)]
    return (whole or dirs)[-1] if dirs else None


def load_tensors_only(path: Path, device="cpu") -> object:
    """torch.load that unpickles only tensors and plain values, so a planted file cannot run code;
    anything else raises pickle.UnpicklingError."""
    with warnings.catch_warnings():
        # torch's advice to retry with weights_only=False, and its note on old pickle protocols
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=device, weights_only=True)


def names_code(error: pickle.UnpicklingError) -> bool:
    """The safe loader met a class or function by name: what a pickle runs code with (else the file
    is damaged or no pickle at all)."""
    return "GLOBAL" in str(error)


def _torch_load(path: Path, device) -> object:
    try:
        return load_tensors_only(path, device)
    except pickle.UnpicklingError:
        raise UnsafeCheckpoint(
            f"{path} holds objects other than tensors and plain values (a foreign or old "
            "format), and loading it could run code, so it is refused."
        ) from None


def load_checkpoint(
    ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device
) -> tuple[dict, dict | None]:
    """Load weights (and optimizer) in place; returns (state, ema shadow or None)."""
    verify(ckpt, skip=() if optimizer is not None else ("optimizer.pt",))
    missing, unexpected = load_model(model, str(ckpt / "model.safetensors"), strict=False, device=str(device))
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit this model (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    state = _torch_load(ckpt / "state.pt", "cpu")
    if not isinstance(state, dict):
        raise ValueError("state.pt holds no training state")
    if optimizer is not None:
        optimizer.load_state_dict(_torch_load(ckpt / "optimizer.pt", device))
    ema = None
    if (ckpt / "ema.safetensors").is_file():
        ema = {**state.get("ema", {}), "shadow": load_file(str(ckpt / "ema.safetensors"), device=str(device))}
    return state, ema


def load_latest(
    root: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    device: torch.device,
    warn: Callable[[str], None],
) -> tuple[Path, dict, dict | None]:
    """Load the newest loadable checkpoint, falling back past damaged ones with a warning; a file
    that could run code is refused outright, not skipped."""
    root = Path(root)
    dirs = step_dirs(root)
    if not dirs:
        raise UserError(f"No checkpoint to resume from in {root}.")
    named = _pointed(root)
    if named is None:
        warn(f"{root / 'latest'} names no checkpoint folder; trying the newest whole one")
        candidates = list(reversed(dirs))
    else:
        candidates = [named] + [d for d in reversed(dirs) if _step(d) < _step(named)]
    for ckpt in candidates:
        try:
            state, ema = load_checkpoint(ckpt, model, optimizer, device)
            return ckpt, state, ema
        except UnsafeCheckpoint:
            raise
        except Exception as e:  # a damaged checkpoint of any kind: try the one before it
            warn(f"checkpoint {ckpt.name} is damaged ({e}); trying the previous one")
    raise UserError(f"Every checkpoint in {root} is damaged; nothing to resume from.")
