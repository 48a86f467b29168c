"""Several training processes through PyTorch's own engine: torch.distributed, DDP and torchrun.

A worker learns its place from the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address), or from SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) when `srun` starts
one task per GPU. One process without either is a world of one: nothing here is used then.

Gradients go through DDP's all-reduce (NCCL on CUDA, gloo on CPU). Decisions every worker must take
together (stop, pause, checkpoint) and the few numbers only logged go through a gloo group on CPU
tensors, so agreeing on them never waits for the GPU's queue to drain.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from core.errors import UserError

# Rank 0 alone evaluates, samples and writes checkpoints while the others wait at their next
# collective; the default 10 minutes of NCCL would end a run whose evaluation takes longer.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The worker that owns the run folder."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.size > 1


def _int_env(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def world_from_env() -> World:
    """This process's place among the workers, from torchrun's variables or SLURM's."""
    if (size := _int_env("WORLD_SIZE")) is not None and (rank := _int_env("RANK")) is not None:
        return World(rank, size, _int_env("LOCAL_RANK") or 0)
    size, rank = _int_env("SLURM_NTASKS"), _int_env("SLURM_PROCID")
    if size and size > 1 and rank is not None and "MDLM_IGNORE_SLURM" not in os.environ:
        # srun with one task per GPU: the rendezvous is the job's first node (set MASTER_ADDR to override)
        os.environ.setdefault("MASTER_ADDR", os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
        os.environ.setdefault("MASTER_PORT", str(29500 + (_int_env("SLURM_JOB_ID") or 0) % 1000))
        os.environ.update(
            RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(_int_env("SLURM_LOCALID") or 0)
        )
        return World(rank, size, _int_env("SLURM_LOCALID") or 0)
    return World()


def launched_worker() -> bool:
    """This process is a worker that torchrun's launcher started."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def stop_with_launcher(signum: int) -> None:
    """A worker of torchrun's launcher lives in a session of its own, so it would train on, unseen, if
    the launcher were killed outright: ask Linux for `signum` then, which the trainer turns into a
    stop after a checkpoint."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() == 1:  # the launcher was already gone before the request was made
        os.kill(os.getpid(), signum)


def worker_device(world: World, name: str) -> str:
    """The device name a worker trains on: with several workers on CUDA, each its own GPU by local rank."""
    if not world.several or name == "cpu":
        return name
    if name.startswith("cuda:"):
        raise UserError(
            f"--device {name} names one GPU, but this run has {world.size} workers, each on the GPU "
            "of its local rank; use --device cuda (or auto)."
        )
    if name == "auto" and not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{world.local_rank}" if name in ("auto", "cuda") else name


class Group:
    """The process group of a run with several workers; every method is a collective that all call."""

    def __init__(self, world: World, device: torch.device):
        self.world = world
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            try:
                dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
            except (RuntimeError, ValueError) as e:
                raise UserError(
                    f"Worker {world.rank} of {world.size} could not join the others ({e}); check "
                    "MASTER_ADDR/MASTER_PORT or torchrun's --rdzv-endpoint."
                ) from None
        self.control = dist.new_group(backend="gloo") if backend != "gloo" else None

    def agree(self, flags: list[float]) -> list[float]:
        """The largest value of each flag over all workers (a stop on one is a stop on all)."""
        values = torch.tensor(flags, dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=self.control)
        return values.tolist()

    def total(self, values: list[float]) -> list[float]:
        """The sum of each value over all workers."""
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, group=self.control)
        return tensor.tolist()

    def from_main(self, value):
        """Rank 0's value, on every worker."""
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, value) -> list:
        """Every worker's value, in rank order, on every worker."""
        out = [None] * self.world.size
        dist.all_gather_object(out, value, group=self.control)
        return out

    def barrier(self) -> None:
        dist.barrier(group=self.control)

    @contextlib.contextmanager
    def local_first(self):
        """The first worker of each node goes first (it fills a cache), then the rest of the node."""
        if self.world.local_rank != 0:
            self.barrier()
        yield
        if self.world.local_rank == 0:
            self.barrier()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


class Alone:
    """A world of one: the same methods as Group, each returning what one worker has."""

    world = World()

    def agree(self, flags: list[float]) -> list[float]:
        return list(flags)

    total = agree

    def from_main(self, value):
        return value

    def gather(self, value) -> list:
        return [value]

    def barrier(self) -> None:
        pass

    @contextlib.contextmanager
    def local_first(self):
        yield

    def close(self) -> None:
        pass


def join(world: World, device: torch.device) -> Group | Alone:
    return Group(world, device) if world.several else Alone()
