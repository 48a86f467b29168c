"""Where workers learn their place: torchrun's variables, SLURM's, and the launcher's node settings."""

import os

import pytest

from core.distributed import World, worker_device, world_from_env
from core.errors import UserError
from core.launcher import nodes_from

TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SLURM = (
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_JOB_ID",
    "SLURM_NNODES",
    "SLURM_JOB_NUM_NODES",
    "SLURM_NODEID",
    "SLURM_JOB_NODELIST",
    "SLURM_NODELIST",
    "SLURM_LAUNCH_NODE_IPADDR",
)


@pytest.fixture
def env(monkeypatch):
    """A private copy of the environment: reading SLURM's variables writes torchrun's into it, which
    must not reach the tests that run after these in the same process."""
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in TORCHRUN + SLURM})
    return monkeypatch


def test_one_process_without_either_is_a_world_of_one(env):
    assert world_from_env() == World() and not World().several


def test_torchrun_variables_give_rank_and_world(env):
    env.setenv("RANK", "5"), env.setenv("WORLD_SIZE", "8"), env.setenv("LOCAL_RANK", "1")
    assert world_from_env() == World(5, 8, 1)


def test_srun_with_a_task_per_gpu_reads_slurm(env):
    for name, value in {
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "6",
        "SLURM_LOCALID": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.7",
    }.items():
        env.setenv(name, value)
    assert world_from_env() == World(6, 8, 2)
    # torch.distributed reads the rendezvous from the environment: the job's launch node
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], os.environ["RANK"]) == (
        "10.0.0.7",
        "29742",
        "6",
    )


def test_a_single_slurm_task_is_an_ordinary_run(env):
    env.setenv("SLURM_NTASKS", "1"), env.setenv("SLURM_PROCID", "0")
    assert world_from_env() == World()


def test_each_worker_takes_the_gpu_of_its_local_rank():
    assert worker_device(World(3, 4, 3), "cuda") == "cuda:3"
    assert worker_device(World(3, 4, 3), "cpu") == "cpu"
    assert worker_device(World(), "cuda:1") == "cuda:1"
    with pytest.raises(UserError, match="names one GPU"):
        worker_device(World(1, 2, 1), "cuda:1")


def test_node_settings_come_from_the_command_line_or_the_slurm_job(env):
    assert nodes_from(None, None, None, None).count == 1
    nodes = nodes_from(2, 1, "head:29400", "job")
    assert (nodes.count, nodes.rank, nodes.endpoint, nodes.run_id) == (2, 1, "head:29400", "job")
    for name, value in {
        "SLURM_NNODES": "4",
        "SLURM_NODEID": "3",
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NODELIST": "gpu-a,gpu-b,gpu-c,gpu-d",
    }.items():
        env.setenv(name, value)
    nodes = nodes_from(None, None, None, None)
    assert (nodes.count, nodes.rank, nodes.run_id) == (4, 3, "77")
    assert nodes.endpoint in ("gpu-a:29500",) or nodes.endpoint.endswith(":29500")  # scontrol, where present


@pytest.mark.parametrize(
    "count, rank, endpoint, words",
    [
        (2, None, None, "needs --rdzv-endpoint"),
        (2, 2, "h:1", "--node-rank must be in 0..1"),
    ],
)
def test_node_settings_that_cannot_meet_are_one_sentence(env, count, rank, endpoint, words):
    with pytest.raises(UserError, match=words):
        nodes_from(count, rank, endpoint, None)
