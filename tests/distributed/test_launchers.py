"""Every launcher's variables and placement, seen through `hvdbench topology` under the real
launchers: MPICH's Hydra (`mpiexec.mpich`, installed beside Open MPI by `make install-slurm`)
and Open MPI's `mpirun --bind-to core`, whose binding must stand (not be sliced again)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from hvdbench.launch import launcher
from tests.conftest import base_env, run

pytestmark = pytest.mark.distributed

TOPOLOGY = [sys.executable, "-m", "hvdbench", "topology", "--json"]
# A shell prints the mask the launcher gave it (inherited by exec), then hvdbench reports.
MASKED = [
    "sh",
    "-c",
    'echo "mask $(sed -n "s/^Cpus_allowed_list:\\s*//p" /proc/self/status)"; exec "$@"',
    "sh",
    *TOPOLOGY,
]


def reports(output: str) -> list[dict]:
    return sorted(
        (json.loads(line) for line in output.splitlines() if line.startswith("{")),
        key=lambda r: r["rank"],
    )


def masks(output: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in output.splitlines() if line.startswith("mask ")]


def test_mpich_hydra_ranks_have_their_own_local_ranks():
    mpiexec = shutil.which("mpiexec.mpich")
    if mpiexec is None:
        pytest.skip("MPICH's mpiexec.mpich is not installed: make install-slurm")
    r = run([mpiexec, "-n", "2", *TOPOLOGY], timeout=120, env=base_env())
    assert r.returncode == 0, r.output
    got = reports(r.stdout)
    assert [(g["rank"], g["size"], g["local_rank"], g["local_size"]) for g in got] == [
        (0, 2, 0, 2),
        (1, 2, 1, 2),
    ], r.output
    assert {g["source"] for g in got} == {"hydra"}
    if len(os.sched_getaffinity(0)) >= 2:  # Hydra binds nothing: hvdbench splits the cores
        assert [g["binding"] for g in got] == ["hvdbench", "hvdbench"]
        assert not set(got[0]["cpus"]) & set(got[1]["cpus"])


def test_mpirun_bind_to_core_stands():
    """`mpirun --bind-to core`: each rank's CPUs are the core Open MPI gave it."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs for 2 ranks bound to a core each")
    cmd = [launcher.tool_path("mpirun"), "-np", "2", "-H", launcher.hosts_arg("", 2),
           "--bind-to", "core", "--map-by", "core", *MASKED]  # fmt: skip
    r = run(cmd, timeout=120, env=base_env())
    assert r.returncode == 0, r.output
    got = reports(r.stdout)
    given = sorted(masks(r.stdout))
    assert len(got) == 2 and len(given) == 2, r.output
    assert [g["binding"] for g in got] == ["launcher", "launcher"], r.output
    from hvdbench.launch.cputopo import format_cpulist

    assert sorted(format_cpulist(g["cpus"]) for g in got) == given
    assert not set(got[0]["cpus"]) & set(got[1]["cpus"])


@pytest.mark.parametrize("which", ["mpirun", "horovodrun"])
def test_horovod_start_up_exchange_reaches_only_the_chief(which, tmp_path):
    """HorovodMode.exchange: the chief gets every rank's object in rank order, intact;
    a worker gets nothing back (O(1) per worker), under MPI and under Gloo."""
    script = [sys.executable, str(Path(__file__).parent / "scripts" / "exchange.py")]
    if which == "mpirun":
        cmd = launcher.mpirun_command(2, script, oversubscribe=len(os.sched_getaffinity(0)) < 2)
    else:
        cmd = launcher.horovodrun_command(2, script, controller="gloo")
    r = run(cmd, timeout=240, env=base_env({"EXCHANGE_OUT": str(tmp_path)}))
    assert r.returncode == 0, r.output
    lines = sorted(
        (json.loads(p.read_text()) for p in tmp_path.glob("rank-*.json")),
        key=lambda x: x["rank"],
    )
    assert [x["rank"] for x in lines] == [0, 1], r.output
    chief, worker = lines
    assert worker["got"] is None
    assert [g["rank"] for g in chief["got"]] == [0, 1]
    assert [len(g["pad"]) for g in chief["got"]] == [1000, 1100]
    assert [g["tuple"] for g in chief["got"]] == [[0, 1], [1, 1]]  # tuples, printed as JSON


def test_mpich_hydra_bind_to_core_stands():
    """`mpiexec.mpich -bind-to core`: Hydra's binding stands, as Open MPI's does."""
    mpiexec = shutil.which("mpiexec.mpich")
    if mpiexec is None:
        pytest.skip("MPICH's mpiexec.mpich is not installed: make install-slurm")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs for 2 ranks bound to a core each")
    r = run([mpiexec, "-n", "2", "-bind-to", "core", *MASKED], timeout=120, env=base_env())
    assert r.returncode == 0, r.output
    got = reports(r.stdout)
    from hvdbench.launch.cputopo import format_cpulist

    assert [(g["local_rank"], g["binding"]) for g in got] == [(0, "launcher"), (1, "launcher")]
    assert sorted(format_cpulist(g["cpus"]) for g in got) == sorted(masks(r.stdout))
