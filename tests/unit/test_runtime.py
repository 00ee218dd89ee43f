"""Each rank's share of the node: core slices, thread counts and Open MPI's wait policy."""

from __future__ import annotations

import pytest

from hvdbench import config, runtime


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
