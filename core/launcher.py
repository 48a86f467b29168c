"""`mdlm-tui run --nproc-per-node N`: N workers on this node through torchrun's elastic launcher.

The launcher is PyTorch's (torch.distributed.launcher.elastic_launch, what `torchrun` runs); this
module only fills its settings, from the command line or from SLURM's variables, and turns its
outcome into one sentence. Each worker is `python -m mdlm_tui run ...` with the same arguments and
an explicit --run-dir, so all of them write to (and rank 0 owns) one run folder.

Ctrl+C or SIGTERM to this process reaches the workers through the launcher; they stop together
after one checkpoint. A worker that dies takes the others down; the run's status then says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass

from core.errors import TrainingFailed, UserError
from core.runs import ACTIVE_STATES, RunDir

SHUTDOWN_S = 120  # how long stopping workers may take to write their checkpoint before a SIGKILL


@dataclass
class Nodes:
    """Where the workers of a run meet: one node alone, or several through a rendezvous endpoint."""

    count: int = 1
    rank: int = 0
    endpoint: str | None = None  # host[:port] of the c10d rendezvous
    run_id: str | None = None


def _first_slurm_host() -> str | None:
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        return None
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return nodelist.split(",")[0] if "[" not in nodelist else None


def nodes_from(count: int | None, rank: int | None, endpoint: str | None, run_id: str | None) -> Nodes:
    """The command line's node settings, completed from SLURM's variables inside a SLURM job (one
    `mdlm-tui run` per node, e.g. `srun --ntasks-per-node=1`)."""
    slurm_nodes = os.environ.get("SLURM_NNODES") or os.environ.get("SLURM_JOB_NUM_NODES")
    if count is None and slurm_nodes:
        count = int(slurm_nodes)
        rank = int(os.environ.get("SLURM_NODEID", "0")) if rank is None else rank
        run_id = run_id or os.environ.get("SLURM_JOB_ID")
        if endpoint is None and count > 1:
            host = os.environ.get("MASTER_ADDR") or _first_slurm_host()
            if host is None:
                raise UserError(
                    "Cannot tell this SLURM job's first node (no scontrol, no MASTER_ADDR); "
                    "give --rdzv-endpoint HOST:PORT."
                )
            endpoint = f"{host}:{os.environ.get('MASTER_PORT', '29500')}"
    count = count or 1
    if count < 1 or not 0 <= (rank or 0) < count:
        raise UserError(f"--node-rank must be in 0..{count - 1} for --nnodes {count}.")
    if count > 1 and not endpoint:
        raise UserError(f"--nnodes {count} needs --rdzv-endpoint HOST:PORT, the same on every node.")
    return Nodes(count, rank or 0, endpoint, run_id)


def _config(nproc: int, nodes: Nodes, device: str):
    from torch.distributed.launcher.api import LaunchConfig

    one_node = nodes.count == 1 and not nodes.endpoint
    return LaunchConfig(
        min_nodes=nodes.count,
        max_nodes=nodes.count,
        nproc_per_node=nproc,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0" if one_node else nodes.endpoint,
        run_id=nodes.run_id or str(uuid.uuid4()),
        max_restarts=0,
        shutdown_timeout=SHUTDOWN_S,
        # torchrun's own --node-rank: the order of nodes, so global ranks follow it
        rdzv_configs={"rank": nodes.rank} if not one_node else {},
    )


def launch(nproc: int, nodes: Nodes, device: str, worker_args: list[str], run: RunDir) -> int:
    """Start the workers and wait; returns the exit code for the shell (0, 128 + a signal), or raises
    one sentence when a worker failed."""
    import sys

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    if device.startswith("cuda") and not _cuda_available():
        raise UserError(
            f"--device {device} was asked for, but PyTorch sees no CUDA GPU on this machine; "
            "use --device cpu (gloo) or auto."
        )
    if device.startswith("cuda:"):
        raise UserError(
            f"--device {device} names one GPU, but each of the {nproc} workers takes the GPU of its "
            "local rank; use --device cuda."
        )
    if device == "cpu" or device == "auto" and not _cuda_available():
        # Workers share the cores; torchrun itself gives each one thread unless told otherwise.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    elif _cuda_available() and nproc > _cuda_count():
        raise UserError(
            f"--nproc-per-node {nproc} asks for a GPU per worker, but {_cuda_count()} GPU(s) are visible."
        )
    logging.getLogger("torch.distributed.elastic").setLevel(
        logging.CRITICAL
    )  # the workers and we say what failed
    try:
        elastic_launch(_config(nproc, nodes, device), sys.executable)("-m", "mdlm_tui", *worker_args)
        return 0
    except SignalException as e:
        return 128 + int(e.sigval)  # the workers stopped after a checkpoint; status.json says so
    except ChildFailedError as e:
        rank, failure = min(e.failures.items())
        state = run.read_status().get("state")
        if state == "stopped":  # a signal to one worker stopped them all
            return failure.exitcode if failure.exitcode > 0 else 128 - failure.exitcode
        # The worker said why, above; or the folder belongs to another trainer, alive (the refusal).
        if failure.exitcode > 0 and (state not in ACTIVE_STATES or run.live_pid() is not None):
            return failure.exitcode
        how = (
            f"was killed by {signal.Signals(-failure.exitcode).name}"
            if failure.exitcode < 0
            else f"exited with code {failure.exitcode}"
        )
        reason = f"worker {rank} {how}"
        _claim_failure(run, f"The run ended because {reason}; continue it with --resume.")
        said = " (its own message is above)" if failure.exitcode > 0 else ""
        error = TrainingFailed(
            f"The run ended because {reason}{said}; "
            f"continue it with `mdlm-tui run --resume --run-dir {run.path}`."
        )
        error.exit_code = failure.exitcode if failure.exitcode > 0 else 1
        raise error from None


def _claim_failure(run: RunDir, reason: str) -> None:
    """status.json still says the run trains, but its trainer is gone (every worker of ours has ended):
    say it failed, and why. A live trainer's status is never touched."""
    status = run.read_status()
    if status.get("state") in ACTIVE_STATES and run.live_pid() is None:
        try:
            run.update_status(state="failed", error=reason)
        except OSError:
            pass


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()
