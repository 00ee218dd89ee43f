"""Each rank's share of the node: core slices, thread counts and Open MPI's wait policy."""

from __future__ import annotations

import pytest

from hvdbench import config
from hvdbench.components import runtime
from hvdbench.errors import UsageError
from hvdbench.launch.job import JobLayout


def core_slot(
    cfg: config.Config, rank: int, local_rank: int, local_size: int, num_ps: int
) -> tuple[int, int]:
    layout = JobLayout.plan(cfg)
    if layout.explicit_role is None:  # roles from ranks, with num_ps ps tasks
        layout = JobLayout(cfg.mode.name, num_ps=num_ps, num_workers=0)
    return layout.core_slot(rank, local_rank, local_size)


@pytest.mark.parametrize(
    ("cores", "local_rank", "local_size", "mine"),
    [
        ([0, 1], 0, 1, [0, 1]),
        ([0, 1], 1, 2, [1]),
        ([0, 1, 2, 3], 1, 2, [2, 3]),
        ([3, 1, 2, 0], 0, 2, [0, 1]),
        ([0, 1], 2, 3, [0]),  # more ranks than cores: one shared core each, round-robin
    ],
)
def test_core_slice(cores: list[int], local_rank: int, local_size: int, mine: list[int]) -> None:
    assert runtime.core_slice(cores, local_rank, local_size) == mine


def test_thread_counts_follow_the_cores_unless_set() -> None:
    assert runtime.thread_counts(config.load(None, []), 3) == (3, 0)
    cfg = config.load(None, ["--runtime.intra_op_threads=2", "--runtime.inter_op_threads=1"])
    assert runtime.thread_counts(cfg, 8) == (2, 1)


def test_mpi_yield_is_the_default_and_the_user_wins() -> None:
    env: dict[str, str] = {}
    assert runtime.mpi_environment(config.load(None, []), env) == {
        "OMPI_MCA_mpi_yield_when_idle": "1"
    }
    env = {"OMPI_MCA_mpi_yield_when_idle": "0"}
    assert (
        runtime.mpi_environment(config.load(None, []), env)["OMPI_MCA_mpi_yield_when_idle"] == "0"
    )
    env = {}
    off = config.load(None, ["--runtime.mpi_yield_when_idle=false"])
    assert runtime.mpi_environment(off, env) == {} and env == {}


def _explicit(job: str, index: int, workers: str, mode: str = "parameter_server") -> config.Config:
    ps = ["--cluster.ps_hosts=h1:2000"] if mode == "parameter_server" else []
    return config.load(
        None,
        [
            f"--mode.name={mode}",
            *ps,
            f"--cluster.worker_hosts={workers}",
            f"--cluster.job_name={job}",
            f"--cluster.task_index={index}",
        ],
    )


def test_core_slot_explicit_cluster_workers_split_their_host_ps_floats() -> None:
    """hvdbench's own launcher runs 1 ps + 2 workers on one host: the two workers take one
    half of the cores each and the ps task is left unbound, not round-robin (ps and worker
    1 on one core, worker 0 alone on the other)."""
    two = "h1:2001,h1:2002"
    assert core_slot(_explicit("ps", 0, two), 0, 0, 1, 1) == (0, 1)
    assert core_slot(_explicit("worker", 0, two), 0, 0, 1, 1) == (0, 2)
    assert core_slot(_explicit("worker", 1, two), 0, 0, 1, 1) == (1, 2)
    mixed = "h1:2001,h2:2001,h1:2002"
    assert core_slot(_explicit("worker", 1, mixed), 0, 0, 1, 1) == (0, 1)
    assert core_slot(_explicit("worker", 2, mixed), 0, 0, 1, 1) == (1, 2)
    cfg = _explicit("worker", 1, two, mode="collective_all_reduce")
    assert core_slot(cfg, 0, 0, 1, 0) == (1, 2)


@pytest.mark.parametrize(
    ("rank", "local_rank", "local_size", "num_ps", "slot"),
    [
        (0, 0, 3, 1, (0, 1)),  # mpirun -np 3 on one node: the ps floats ...
        (1, 1, 3, 1, (0, 2)),  # ... and the two workers split the cores
        (2, 2, 3, 1, (1, 2)),
        (1, 1, 2, 1, (0, 1)),  # two nodes of two ranks: node 0 holds the ps and worker 0
        (2, 0, 2, 1, (0, 2)),  # node 1: workers 1 and 2
        (3, 1, 2, 1, (1, 2)),
        (3, 3, 4, 2, (1, 2)),  # two ps tasks on a four-rank node
        (1, 1, 2, 0, (1, 2)),  # no ps (collective_all_reduce): the local rank and size
    ],
)
def test_core_slot_from_ranks(
    rank: int, local_rank: int, local_size: int, num_ps: int, slot: tuple[int, int]
) -> None:
    cfg = config.load(None, ["--mode.name=parameter_server"])
    assert core_slot(cfg, rank, local_rank, local_size, num_ps) == slot


def test_bfc_allocator_is_the_default_and_the_user_wins() -> None:
    env: dict[str, str] = {}
    got = runtime.allocator_environment(config.load(None, []), env)
    assert env == {"TF_CPU_ALLOCATOR_USE_BFC": "1"}
    assert got == {"cpu_allocator": "bfc", "TF_CPU_ALLOCATOR_USE_BFC": "1"}
    env = {"TF_CPU_ALLOCATOR_USE_BFC": "false"}  # the user's setting stands, and is reported
    assert runtime.allocator_environment(config.load(None, []), env)["cpu_allocator"] == "malloc"
    env = {}
    off = config.load(None, ["--runtime.cpu_allocator=malloc"])
    assert runtime.allocator_environment(off, env) == {
        "cpu_allocator": "malloc",
        "TF_CPU_ALLOCATOR_USE_BFC": "",
    }
    assert env == {}


def test_cpu_allocator_refuses_an_unknown_value() -> None:
    with pytest.raises(UsageError) as e:
        config.load(None, ["--runtime.cpu_allocator=tcmalloc"])
    assert "runtime.cpu_allocator" in str(e.value) and "bfc" in str(e.value)
