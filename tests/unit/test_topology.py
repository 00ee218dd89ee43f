"""Rank, size and local rank from each launcher's environment."""

from __future__ import annotations

import pytest

from hvdbench.launch.topology import detect, expand_nodelist, expand_tasks_per_node, in_srun_step


def test_alone():
    t = detect({}, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source, t.launched) == (
        0,
        1,
        0,
        1,
        "single",
        False,
    )


def test_horovodrun_gloo():
    env = {
        "HOROVOD_RANK": "3",
        "HOROVOD_SIZE": "4",
        "HOROVOD_LOCAL_RANK": "1",
        "HOROVOD_LOCAL_SIZE": "2",
    }
    t = detect(env, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (3, 4, 1, 2, "horovod")


def test_mpirun_inside_sbatch_ignores_batch_step_slurm_vars():
    # mpirun in a batch script: every rank inherits the batch step's SLURM_PROCID=0.
    env = {
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "0",
        "SLURM_JOB_ID": "7",
        "OMPI_COMM_WORLD_RANK": "2",
        "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
    }
    t = detect(env, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (2, 4, 0, 2, "openmpi")


def test_batch_step_alone_is_not_a_launched_rank():
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "7"}
    assert not in_srun_step(env)
    assert detect(env, hostname="h").source == "single"


def test_srun_step():
    env = {
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "5",
        "SLURM_STEP_NUM_TASKS": "6",
        "SLURM_NTASKS": "6",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "2",
        "SLURM_STEP_TASKS_PER_NODE": "2(x3)",
    }
    t = detect(env, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (5, 6, 1, 2, "slurm")


def test_srun_pmix_uses_pmix_rank_and_slurm_sizes():
    env = {
        "PMIX_RANK": "1",
        "SLURM_STEP_ID": "3",
        "SLURM_PROCID": "1",
        "SLURM_NTASKS": "3",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "2,1",
    }
    t = detect(env, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (1, 3, 0, 1, "pmix")


def test_slurmd_nodename_names_the_host():
    assert detect({"SLURMD_NODENAME": "node7"}).hostname == "node7"


@pytest.mark.parametrize(
    "text, hosts",
    [
        ("node1", ["node1"]),
        ("node[9-11]", ["node9", "node10", "node11"]),
        ("n[01-03,07],gpu1", ["n01", "n02", "n03", "n07", "gpu1"]),
        ("a[1,3]-ib,b", ["a1-ib", "a3-ib", "b"]),
    ],
)
def test_expand_nodelist_keeps_numeric_order(text, hosts):
    assert expand_nodelist(text) == hosts


def test_expand_tasks_per_node():
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    with pytest.raises(ValueError):
        expand_tasks_per_node("two")
