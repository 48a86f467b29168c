"""Faults around checkpoints and the data cache: a full disk, a garbled `latest`, silently altered
files, a checkpoint rotated away mid-load, a killed data build, a foreign tokenizer and a planted
pickle each end in one sentence and a non-zero exit (or a warned fallback), lose nothing written
before, and never run code from the run folder."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import core.dataset as dataset
from core import checkpoint as ckpt
from core.errors import TrainingFailed, UserError
from tests.helpers import error_line, mdlm, run_status, start, wait_until
from tests.test_checkpoint import Tied
from tests.test_dataset import VOCAB, data_config, small_corpus

SHORT = [
    "--set",
    "train.budget=8 steps",
    "--set",
    "train.checkpoint_every=4",
    "--set",
    "train.keep_checkpoints=3",
    "--set",
    "train.log_every=1",
    "--set",
    "train.dev_every=0",
    "--set",
    "train.threads=1",
]
SAMPLE = ["--length", 16, "--steps", 4]
EVAL = ["--suite", "builtin", "--limit", 1]


def rewrite_meta(folder: Path, name: str) -> None:
    """Record `name`'s new size and sha256, as someone who controls the folder can."""
    meta = json.loads((folder / "meta.json").read_text())
    meta["sizes"][name] = (folder / name).stat().st_size
    meta.setdefault("sha256", {})[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))


def save(root: Path, step: int, model: torch.nn.Module, keep: int = 3, **kwargs) -> Path:
    opt = torch.optim.AdamW(model.parameters())
    return ckpt.save_checkpoint(root, step, model, None, opt, {"step": step}, keep=keep, **kwargs)


def overwrite_inside(path: Path, length: int = 64 * 1024) -> None:
    """0xFF over `length` bytes in the middle of a file, its size unchanged."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + length] = b"\xff" * min(length, len(data) - middle)
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- in process, fast


def test_full_disk_while_saving_keeps_the_previous_checkpoint_latest(tmp_path, monkeypatch):
    model = Tied()
    save(tmp_path, 1, model)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    for _ in range(2):  # a second attempt leaves nothing behind either
        with pytest.raises(TrainingFailed, match=r"step-2 .* \(No space left on device\); step-1 is still"):
            save(tmp_path, 2, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-1"]
    assert (tmp_path / "latest").read_text().strip() == "step-1"


def test_run_folder_removed_while_saving_says_so_not_free_space(tmp_path, monkeypatch):
    root = tmp_path / "run" / "checkpoints"
    model = Tied()
    save(root, 1, model)
    real_save = ckpt._torch_save

    def remove_then_save(obj, path):
        shutil.rmtree(tmp_path / "run", ignore_errors=True)  # as `rm -rf` of the run folder does mid-save
        real_save(obj, path)

    monkeypatch.setattr(ckpt, "_torch_save", remove_then_save)
    with pytest.raises(TrainingFailed) as raised:
        save(root, 2, model)
    assert "step-2" in str(raised.value) and "the run folder was removed" in str(raised.value)
    assert "space" not in str(raised.value) and "no checkpoint was saved" not in str(raised.value)


def test_readers_do_not_need_the_optimizer_state_but_resume_does(tmp_path):
    model = Tied()
    folder = save(tmp_path, 1, model)
    (folder / "optimizer.pt").unlink()  # a reader never loads it, so its absence is no damage to them
    state, _ = ckpt.load_checkpoint(folder, Tied(), None, torch.device("cpu"))
    assert state["step"] == 1
    with pytest.raises(ValueError, match="optimizer.pt is missing"):
        ckpt.load_checkpoint(folder, model, torch.optim.AdamW(model.parameters()), torch.device("cpu"))


def test_save_clears_temporary_folders_a_killed_save_left(tmp_path):
    (tmp_path / ".step-7.tmp").mkdir(parents=True)
    (tmp_path / ".step-7.tmp" / "model.safetensors").write_bytes(b"half")
    save(tmp_path, 8, Tied())
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("pointer", [b"", b"\xff\xfe\x00\x01garbage", b"../../etc", b"step-99\n"])
def test_unusable_latest_pointer_falls_back_to_the_newest_whole_checkpoint(tmp_path, pointer):
    model = Tied()
    for step in (1, 2, 3):
        save(tmp_path, step, model)
    weights = tmp_path / "step-3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-5])  # the newest is damaged
    (tmp_path / "latest").write_bytes(pointer)
    assert ckpt.latest_checkpoint(tmp_path).name == "step-2"
    warnings = []
    where, state, _ = ckpt.load_latest(tmp_path, Tied(), None, torch.device("cpu"), warn=warnings.append)
    assert where.name == "step-2" and state["step"] == 2
    assert "names no checkpoint folder" in warnings[0] and "step-3 is damaged" in warnings[1]


def test_same_size_corruption_is_caught_by_its_checksum(tmp_path):
    model = Tied()
    save(tmp_path, 1, model)
    save(tmp_path, 2, model)
    overwrite_inside(tmp_path / "step-2" / "model.safetensors", 16)
    warnings = []
    where, _, _ = ckpt.load_latest(tmp_path, Tied(), None, torch.device("cpu"), warn=warnings.append)
    assert where.name == "step-1"
    assert "step-2 is damaged (model.safetensors does not match its sha256" in warnings[0]


def test_checkpoint_without_checksums_still_loads(tmp_path):
    torch.manual_seed(0)
    model = Tied()
    save(tmp_path, 1, model)
    meta = json.loads((tmp_path / "step-1" / "meta.json").read_text())
    del meta["sha256"]
    meta["format"] = 1
    (tmp_path / "step-1" / "meta.json").write_text(json.dumps(meta))
    other = Tied()
    where, state, _ = ckpt.load_latest(tmp_path, other, None, torch.device("cpu"), warn=print)
    assert state["step"] == 1 and torch.equal(other.emb.weight, model.emb.weight)


def test_rotation_after_a_fallback_keeps_the_resumed_checkpoint_and_drops_the_damaged_one(tmp_path):
    model = Tied()
    save(tmp_path, 10, model, keep=2)
    save(tmp_path, 20, model, keep=2)
    overwrite_inside(tmp_path / "step-20" / "model.safetensors", 16)  # damage only a checksum sees
    where, _, _ = ckpt.load_latest(tmp_path, model, None, torch.device("cpu"), warn=lambda m: None)
    assert where.name == "step-10"
    save(tmp_path, 15, model, keep=2, protect=where)
    assert [d.name for d in ckpt.step_dirs(tmp_path)] == ["step-10", "step-15"]
    save(tmp_path, 30, model, keep=1, protect=where)
    assert [d.name for d in ckpt.step_dirs(tmp_path)] == ["step-10", "step-30"]


def test_garbage_ids_in_the_data_cache_are_caught_and_rebuilt(tmp_path):
    small_corpus(tmp_path / "corpus")
    first = dataset.prepare_data(data_config(tmp_path), log=lambda line: None)
    expected = np.array(first.train)
    for name in ("train.npy", "dev.npy"):
        damaged = first.cache_path / name
        shape = np.load(damaged, mmap_mode="r").shape
        damaged.unlink()  # replace, not rewrite: this process still maps the old file
        np.save(damaged, np.full(shape, 10 * VOCAB, dtype=np.int32))
    lines = []
    again = dataset.prepare_data(data_config(tmp_path), log=lines.append)
    assert any("does not match its sha256" in line and "rebuilding" in line for line in lines)
    assert np.array_equal(expected, again.train) and int(again.dev.max()) < VOCAB


def test_data_build_temp_folders_of_dead_processes_are_removed(tmp_path):
    small_corpus(tmp_path / "corpus")
    root = tmp_path / "cache"
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = dataset._host_id()
    gone = root / f".0123456789abcdef.tmp-{dead.pid}-{host}.abc"
    legacy = root / ".0123456789abcdef.k2j3h4l5"  # named by an older build: judged by age
    alive = root / f".0123456789abcdef.tmp-{os.getpid()}-{host}.def"
    for folder in (gone, legacy, alive):
        folder.mkdir(parents=True)
        (folder / "train_ids.npy").write_bytes(b"partial")
    old = time.time() - 2 * dataset._FOREIGN_STALE_S
    os.utime(legacy, (old, old))
    dataset.prepare_data(data_config(tmp_path), log=lambda line: None)
    assert not gone.exists() and not legacy.exists() and alive.exists()


def test_cache_write_error_without_strerror_still_says_why(tmp_path):
    def build(folder):
        raise OSError("the cache volume went away")

    with pytest.raises(UserError) as raised:
        dataset._build_atomically(tmp_path / "seq16", build)
    assert "None" not in str(raised.value) and "the cache volume went away" in str(raised.value)
    assert not list(tmp_path.glob(".*"))


def test_a_short_write_of_the_cache_is_said_to_be_a_full_disk(tmp_path):
    def build(folder):  # what numpy raises when the disk fills under np.save
        raise OSError("1723124 requested and 457696 written")

    with pytest.raises(UserError) as raised:
        dataset._build_atomically(tmp_path / "seq16", build)
    assert "the disk is full: 1723124 requested and 457696 written" in str(raised.value)


# ---------------------------------------------------------------- the installed command


@pytest.fixture
def run_copy(finished_smoke_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_smoke_run, copy)
    return copy


@pytest.mark.slow
def test_full_disk_fails_in_one_sentence_and_keeps_the_previous_checkpoint(tmpfs):
    run_dir = tmpfs("30m") / "run"  # room for one smoke checkpoint (18 MB) but not two
    settings = [
        "--set",
        "train.budget=6 steps",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.dev_every=0",
        "--set",
        "train.log_every=1",
        "--set",
        "train.threads=1",
    ]
    first = mdlm("run", "--preset", "smoke", "--run-dir", run_dir, *settings)
    again = mdlm("run", "--resume", "--run-dir", run_dir)
    for result in (first, again):
        error = error_line(result, code=3)
        assert "step-4" in error and "No space left on device" in error
        assert "step-2 is still the latest" in error
        st = run_status(run_dir)
        assert st["state"] == "failed" and "No space left on device" in st["error"]
        checkpoints = run_dir / "checkpoints"
        assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step-2"]
        assert (checkpoints / "latest").read_text().strip() == "step-2"
        ckpt.verify(checkpoints / "step-2")
    assert "resumed from step 2" in again.stdout


@pytest.mark.slow
@pytest.mark.parametrize("pointer", [b"", b"\x89PNG\r\n\x1a\n\x00\xff"])
def test_empty_or_binary_latest_falls_back_for_resume_eval_and_sample(run_copy, pointer):
    (run_copy / "checkpoints" / "latest").write_bytes(pointer)
    sample = mdlm("sample", run_copy, *SAMPLE)
    assert sample.returncode == 0 and sample.stdout.strip(), sample.stderr
    assert "step-8" in sample.stderr
    evaluated = mdlm("eval", run_copy, *EVAL)
    assert evaluated.returncode == 0, evaluated.stderr
    resumed = mdlm("run", "--resume", "--run-dir", run_copy, "--set", "train.budget=9 steps")
    assert resumed.returncode == 0, resumed.stderr
    assert "names no checkpoint folder" in resumed.stdout and "resumed from step 8" in resumed.stdout
    assert (run_copy / "checkpoints" / "latest").read_text().strip() == "step-9"


@pytest.mark.slow
def test_silent_corruption_is_refused_by_eval_and_sample_and_skipped_by_resume(run_copy):
    overwrite_inside(run_copy / "checkpoints" / "step-8" / "model.safetensors")
    for command in (["sample", run_copy, *SAMPLE], ["eval", run_copy, *EVAL]):
        error = error_line(mdlm(*command))
        assert "step-8" in error and "model.safetensors does not match its sha256" in error
    resumed = mdlm("run", "--resume", "--run-dir", run_copy, "--set", "train.budget=10 steps")
    assert resumed.returncode == 0, resumed.stderr
    assert "step-8 is damaged (model.safetensors does not match its sha256" in resumed.stdout
    assert "resumed from step 4" in resumed.stdout and "non-finite" not in resumed.stdout + resumed.stderr
    assert run_status(run_copy)["state"] == "finished" and run_status(run_copy)["step"] == 10


@pytest.mark.slow
def test_eval_retries_when_the_trainer_rotates_the_checkpoint_away(run_copy, monkeypatch):
    import core.evaluate as evaluate

    real_check = evaluate.check_weights_fit
    checkpoints = run_copy / "checkpoints"

    def rotate_then_check(folder, model, cfg):
        if folder.name == "step-8":  # as a trainer does between our lookup and load: a new one, the old gone
            shutil.copytree(checkpoints / "step-8", checkpoints / "step-12")
            (checkpoints / "latest").write_text("step-12\n")
            shutil.rmtree(checkpoints / "step-8")
        return real_check(folder, model, cfg)

    monkeypatch.setattr(evaluate, "check_weights_fit", rotate_then_check)
    _, _, _, loaded = evaluate.load_for_eval(str(run_copy), warn=lambda m: None)
    assert loaded.name == "step-12"


def rotate_on_read(monkeypatch, checkpoints: Path, times: int | None) -> list[str]:
    """Make every read of the checkpoint `latest` names find it replaced first, `times` times (None:
    without end), as a trainer saving at every step with keep_checkpoints=1 does; the folders read."""
    import core.evaluate as evaluate

    real_check, read = evaluate.check_weights_fit, []

    def rotate_then_check(folder, model, cfg):
        read.append(folder.name)
        if times is None or len(read) <= times:
            step = int(folder.name.split("-")[1])
            os.rename(folder, checkpoints / f"step-{step + 1}")  # the new one published, the old gone
            (checkpoints / "latest").write_text(f"step-{step + 1}\n")
        return real_check(folder, model, cfg)

    monkeypatch.setattr(evaluate, "check_weights_fit", rotate_then_check)
    return read


@pytest.mark.slow
def test_eval_follows_latest_through_several_rotations_in_a_row(run_copy, monkeypatch):
    import core.evaluate as evaluate

    read = rotate_on_read(monkeypatch, run_copy / "checkpoints", times=6)
    _, _, _, loaded = evaluate.load_for_eval(str(run_copy), warn=lambda m: None)
    assert loaded.name == "step-14" and read == [f"step-{n}" for n in range(8, 15)]


@pytest.mark.slow
def test_eval_gives_up_on_endless_rotation_naming_the_trainer_not_damage(run_copy, monkeypatch):
    import core.evaluate as evaluate

    read = rotate_on_read(monkeypatch, run_copy / "checkpoints", times=None)
    monkeypatch.setattr(time, "monotonic", lambda: 10.0 * len(read))  # each attempt takes 10 s
    with pytest.raises(UserError) as raised:
        evaluate.load_for_eval(str(run_copy), warn=lambda m: None)
    message = str(raised.value)
    assert "replaced its latest checkpoint 4 times in 30 s" in message and "keep_checkpoints" in message
    assert "incomplete" not in message and "cannot be loaded" not in message


@pytest.mark.slow
def test_a_really_incomplete_checkpoint_is_called_incomplete_at_once(run_copy, monkeypatch):
    import core.evaluate as evaluate

    (run_copy / "checkpoints" / "step-8" / "model.safetensors").unlink()
    read = rotate_on_read(monkeypatch, run_copy / "checkpoints", times=0)
    with pytest.raises(UserError, match="step-8 has no model.safetensors: it is incomplete"):
        evaluate.load_for_eval(str(run_copy), warn=lambda m: None)
    assert read == ["step-8"]


@pytest.mark.slow
def test_kill_during_data_preparation_leaves_no_temp_folder_after_the_next_prepare(tmp_path, monkeypatch):
    from core.config import load_config

    cache = tmp_path / "cache"
    monkeypatch.setenv("MDLM_TUI_CACHE", str(cache))
    proc = start("run", "--preset", "smoke", "--run-dir", tmp_path / "run", "--set", "train.threads=1")
    try:
        wait_until(
            lambda: cache.is_dir() and any(p.name.startswith(".") for p in cache.iterdir()),
            "a temporary cache folder",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert any(p.name.startswith(".") for p in cache.iterdir())
    dataset.prepare_data(load_config("smoke", []).data, log=lambda line: None)
    assert not list(cache.rglob(".*"))


@pytest.mark.slow
def test_a_foreign_tokenizer_is_refused_by_resume_eval_and_sample(run_copy):
    from core.tokenizer import train_tokenizer

    foreign = run_copy / "tokenizer.json"
    train_tokenizer(
        [f"A different corpus, line {i}: zebras graze under acacia trees." for i in range(200)], 4096
    ).save(str(foreign))
    planted = foreign.read_bytes()
    for command in (
        ["sample", run_copy, *SAMPLE],
        ["eval", run_copy, *EVAL],
        ["run", "--resume", "--run-dir", run_copy, "--set", "train.budget=10 steps"],
    ):
        error = error_line(mdlm(*command))
        assert "tokenizer.json is not the tokenizer step-8 was trained with" in error
    assert foreign.read_bytes() == planted, "a refused resume changes nothing"
    assert (run_copy / "checkpoints" / "latest").read_text().strip() == "step-8"


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.slow
def test_a_planted_pickle_is_refused_and_never_run(run_copy, tmp_path):
    marker = tmp_path / "code-ran"
    folder = run_copy / "checkpoints" / "step-8"
    torch.save({"step": 8, "payload": _RunsCode(marker)}, folder / "state.pt")
    rewrite_meta(folder, "state.pt")  # whoever planted it could fix the checksum too
    for command in (
        ["run", "--resume", "--run-dir", run_copy],
        ["eval", run_copy, *EVAL],
        ["sample", run_copy, *SAMPLE],
    ):
        error = error_line(mdlm(*command))
        assert "state.pt" in error and "could run code" in error
        assert not marker.exists()
