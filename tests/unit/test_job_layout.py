"""JobLayout: the one owner of the job's arithmetic (ps tasks, workers, roles, core slots)."""

from __future__ import annotations

import pytest

from hvdbench import config
from hvdbench.errors import UsageError
from hvdbench.launch.job import JobLayout, Role
from hvdbench.launch.topology import Topology


def plan(*overrides: str) -> JobLayout:
    return JobLayout.plan(config.load(None, list(overrides)))


def launched(rank: int, size: int, local_rank: int = 0, local_size: int = 1) -> Topology:
    return Topology(rank, size, local_rank, local_size, "openmpi", "node1")


SINGLE = Topology(0, 1, 0, 1, "single", "node1")


@pytest.mark.parametrize(
    ("overrides", "num_ps", "world", "formula"),
    [
        (["--launch.np=4"], 0, 4, "workers(4)"),
        (["--mode.name=parameter_server", "--launch.np=4"], 1, 5, "ps(1) + workers(4)"),
        (
            ["--mode.name=distributed_replicated", "--ps.num_ps=2", "--launch.np=3"],
            2,
            5,
            "ps(2) + workers(3)",
        ),
        (["--mode.name=collective_all_reduce", "--launch.np=3"], 0, 3, "workers(3)"),
        (["--mode.name=replicated", "--launch.np=1"], 0, 1, "workers(1)"),
    ],
)
def test_plan_counts_ps_on_top_of_workers(
    overrides: list[str], num_ps: int, world: int, formula: str
) -> None:
    layout = plan(*overrides)
    assert (layout.num_ps, layout.world_size, layout.formula()) == (num_ps, world, formula)


def test_the_launchers_ranks_must_add_up_and_the_message_shows_the_arithmetic() -> None:
    cfg = config.load(None, ["--mode.name=parameter_server", "--launch.np=4"])
    assert JobLayout.of_rank(cfg, launched(0, 5)).world_size == 5
    with pytest.raises(UsageError) as e:
        JobLayout.of_rank(cfg, launched(0, 6))
    assert str(e.value).startswith("launch.np: ps(1) + workers(4) != ranks(6): ")
    assert "needs 5" in str(e.value)


def test_np_zero_takes_the_workers_from_the_launcher() -> None:
    cfg = config.load(None, ["--mode.name=parameter_server", "--launch.np=0"])
    layout = JobLayout.of_rank(cfg, launched(0, 4))
    assert (layout.num_ps, layout.num_workers) == (1, 3)
    with pytest.raises(UsageError, match=r"ps\(1\) \+ workers\(0\) leaves no worker"):
        JobLayout.of_rank(cfg, launched(0, 1))
    assert JobLayout.of_rank(config.load(None, []), SINGLE).num_workers == 1


def test_roles_ps_first_and_the_chief_is_worker_0() -> None:
    layout = plan("--mode.name=parameter_server", "--ps.num_ps=2", "--launch.np=2")
    assert layout.roles() == [Role("ps", 0), Role("ps", 1), Role("worker", 0), Role("worker", 1)]
    assert layout.role(2) == Role("worker", 0)


def test_explicit_cluster_core_slots_and_no_launcher_check() -> None:
    cfg = config.load(
        None,
        [
            "--mode.name=parameter_server",
            "--cluster.ps_hosts=h0:1",
            "--cluster.worker_hosts=h1:1,h1:2,h2:1",
            "--cluster.job_name=worker",
            "--cluster.task_index=1",
        ],
    )
    layout = JobLayout.of_rank(cfg, launched(0, 1))  # each task started on its own
    assert (layout.num_workers, layout.core_slot(0, 0, 1)) == (3, (1, 2))


def test_horovod_core_slot_is_the_local_rank() -> None:
    assert plan("--launch.np=4").core_slot(3, 1, 2) == (1, 2)
