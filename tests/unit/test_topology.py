"""Rank, size and local rank from each launcher's environment."""

from __future__ import annotations

import io

import pytest

from hvdbench.cli import whole_lines
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


# -- every launcher's variables: under these, every rank used to be local rank 0 -----------


def test_mpich_hydra():
    """``mpiexec.mpich -n 4 -ppn 2``: PMI_* for the world, MPI_LOCAL* for the node."""
    env = {"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2",
           "PMI_FD": "7"}  # fmt: skip
    t = detect(env, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (3, 4, 1, 2, "hydra")


def test_intel_mpi_hydra_inside_an_sbatch_allocation():
    """Intel MPI's mpiexec.hydra in a batch script: the batch step's SLURM_* are ignored."""
    env = {"PMI_RANK": "5", "PMI_SIZE": "8", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "4",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "9"}  # fmt: skip
    t = detect(env, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (5, 8, 1, 4, "hydra")


def test_cray_pals():
    """Cray PALS's mpiexec sets PALS_* and Cray PMI's PMI_*: PALS wins, and PMI_SIZE sizes it
    when PALS_SIZE is absent."""
    env = {"PALS_RANKID": "6", "PALS_LOCAL_RANKID": "2", "PALS_LOCAL_SIZE": "4",
           "PALS_NODEID": "1", "PMI_RANK": "6", "PMI_SIZE": "8"}  # fmt: skip
    t = detect(env, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (6, 8, 2, 4, "pals")


def test_cray_pals_with_its_own_size():
    env = {"PALS_RANKID": "1", "PALS_SIZE": "2", "PALS_LOCAL_RANKID": "1"}
    t = detect(env, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (1, 2, 1, 1, "pals")


def test_cray_pmi_local_variables():
    """Cray MPICH's PMI without PALS (e.g. aprun): PMI_LOCAL_RANK / PMI_LOCAL_SIZE."""
    env = {"PMI_RANK": "2", "PMI_SIZE": "4", "PMI_LOCAL_RANK": "0", "PMI_LOCAL_SIZE": "2"}
    t = detect(env, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (2, 4, 0, 2, "hydra")


def test_srun_pmi2_is_not_taken_for_hydra():
    """``srun --mpi=pmi2`` sets PMI_RANK/PMI_SIZE but no MPI_LOCALRANKID: Slurm places it."""
    env = {"PMI_RANK": "3", "PMI_SIZE": "4", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3",
           "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
           "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}  # fmt: skip
    t = detect(env, hostname="h")
    assert (t.rank, t.size, t.local_rank, t.local_size, t.source) == (3, 4, 1, 2, "pmix")


def test_open_mpi_comes_before_the_pmi_variables():
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
           "PMIX_RANK": "1", "PMI_RANK": "0", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0"}  # fmt: skip
    assert detect(env, hostname="h").source == "openmpi"


class _Writes(io.RawIOBase):
    """A raw stream that keeps each write the OS would have seen."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.calls.append(bytes(b))
        return len(b)


def test_each_printed_line_is_one_write_even_unbuffered():
    """PYTHONUNBUFFERED (write-through) makes `print` write a line and its newline apart, so
    two ranks' `topology --json` lines arrived joined; whole_lines makes each line one write."""
    raw = _Writes()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # as under -u
    print('{"rank": 0}', file=out, flush=True)
    assert raw.calls == [b'{"rank": 0}', b"\n"]  # the split the launchers interleaved
    raw.calls.clear()
    whole_lines(out)
    print('{"rank": 1}', file=out, flush=True)
    print("step 10", file=out)  # no flush asked: still shown at its newline
    assert raw.calls == [b'{"rank": 1}\n', b"step 10\n"]
