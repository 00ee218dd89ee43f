"""CPU topology from a fake sysfs tree, and each rank's CPUs: the launcher's binding stands;
hvdbench's own slices whole physical cores, within a NUMA node where the counts allow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hvdbench.launch import cputopo
from hvdbench.launch.cputopo import format_cpulist, parse_cpulist, plan, read_machine


def fake_sysfs(
    root: Path,
    cpus: dict[int, tuple[int, int]],
    nodes: dict[int, list[int]] | None = None,
    cgroup: str | None = None,
    cgroup_v1: str | None = None,
) -> Path:
    """A sysfs/procfs tree: ``cpus`` maps cpu id -> (package, core_id); ``nodes`` NUMA node ->
    cpu ids; ``cgroup`` the v2 ``cpuset.cpus.effective`` of this process's cgroup."""
    cpu_dir = root / "sys/devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    (cpu_dir / "online").write_text(format_cpulist(cpus) + "\n")
    for cid, (package, core) in cpus.items():
        t = cpu_dir / f"cpu{cid}/topology"
        t.mkdir(parents=True)
        (t / "physical_package_id").write_text(f"{package}\n")
        (t / "core_id").write_text(f"{core}\n")
    for nid, ids in (nodes or {}).items():
        n = root / f"sys/devices/system/node/node{nid}"
        n.mkdir(parents=True)
        (n / "cpulist").write_text(format_cpulist(ids) + "\n")
    (root / "proc/self").mkdir(parents=True)
    if cgroup is not None:
        (root / "proc/self/cgroup").write_text("0::/slurm/job1/step0\n")
        d = root / "sys/fs/cgroup/slurm/job1/step0"
        d.mkdir(parents=True)
        (root / "sys/fs/cgroup/cpuset.cpus.effective").write_text(format_cpulist(cpus) + "\n")
        (d.parent / "cpuset.cpus.effective").write_text(cgroup + "\n")  # the job's
        # the step's cgroup has no cpuset controller: the nearest ancestor's file counts
    elif cgroup_v1 is not None:
        (root / "proc/self/cgroup").write_text("4:memory:/x\n3:cpuset:/slurm/uid_0/job_1\n0::/\n")
        d = root / "sys/fs/cgroup/cpuset/slurm/uid_0/job_1"
        d.mkdir(parents=True)
        (d / "cpuset.effective_cpus").write_text(cgroup_v1 + "\n")
    else:
        (root / "proc/self/cgroup").write_text("0::/\n")
    return root


def two_sockets(root: Path, **kw) -> cputopo.Machine:
    """2 sockets x 8 cores x 2 threads, Linux's numbering: cpu N and N+16 are siblings;
    socket 0 has cpus 0-7 and 16-23 (NUMA node 0), socket 1 has 8-15 and 24-31 (node 1)."""
    cpus = {}
    for cid in range(32):
        phys = cid % 16
        cpus[cid] = (phys // 8, phys % 8)
    nodes = {0: [*range(0, 8), *range(16, 24)], 1: [*range(8, 16), *range(24, 32)]}
    return read_machine(fake_sysfs(root, cpus, nodes, **kw))


def test_cpulists():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("") == []
    assert format_cpulist([5, 0, 1, 2]) == "0-2,5"


def test_two_sockets_are_read_with_cores_and_nodes(tmp_path):
    m = two_sockets(tmp_path)
    assert len(m.cpus) == 32 and m.allowed == frozenset(range(32))
    assert m.cpu(16) == cputopo.Cpu(16, 0, 0, 0)  # cpu16: core 0's second thread
    assert m.cpu(24) == cputopo.Cpu(24, 1, 0, 1)
    cores = cputopo.cores_of(m, range(32))
    assert len(cores) == 16 and cores[0] == [0, 16] and cores[8] == [8, 24]


@pytest.mark.parametrize(
    "count, index, expected",
    [
        (2, 0, [*range(0, 8), *range(16, 24)]),  # one rank per socket: the whole socket
        (2, 1, [*range(8, 16), *range(24, 32)]),
        (4, 1, [4, 5, 6, 7, 20, 21, 22, 23]),  # 4 whole cores, both threads, on node 0
        (4, 2, [8, 9, 10, 11, 24, 25, 26, 27]),
        (16, 1, [1, 17]),  # one core each
    ],
)
def test_hvdbench_slices_whole_cores_within_a_numa_node(tmp_path, count, index, expected):
    m = two_sockets(tmp_path)
    b = plan(m, list(range(32)), index, count, bind=True)
    assert b.how == "hvdbench"
    assert list(b.cpus) == expected
    assert len({m.cpu(c).node for c in b.cpus}) == 1


def test_no_rank_gets_another_ranks_sibling_threads(tmp_path):
    m = two_sockets(tmp_path)
    shares = [plan(m, list(range(32)), i, 8, bind=True).cpus for i in range(8)]
    cores = [{(m.cpu(c).package, m.cpu(c).core) for c in s} for s in shares]
    for i in range(8):
        for j in range(i + 1, 8):
            assert not cores[i] & cores[j], (i, j)
    assert sorted(c for s in shares for c in s) == list(range(32))


def test_threads_apart_only_with_more_ranks_than_cores(tmp_path):
    m = two_sockets(tmp_path)
    shares = [plan(m, list(range(32)), i, 32, bind=True).cpus for i in range(32)]
    assert all(len(s) == 1 for s in shares)
    assert shares[0] == (0,) and shares[1] == (16,)  # the two threads of core 0
    assert sorted(s[0] for s in shares) == list(range(32))


def test_one_socket_four_numa_nodes(tmp_path):
    """1 socket of 16 cores (no SMT) in 4 NUMA nodes of 4 (e.g. AMD's NPS4)."""
    cpus = {c: (0, c) for c in range(16)}
    nodes = {n: list(range(4 * n, 4 * n + 4)) for n in range(4)}
    m = read_machine(fake_sysfs(tmp_path, cpus, nodes))
    for count in (2, 4, 8):
        shares = [plan(m, list(range(16)), i, count, bind=True).cpus for i in range(count)]
        for s in shares:
            assert len(s) == 16 // count
            assert len({m.cpu(c).node for c in s}) == 1 or count == 2
    assert plan(m, list(range(16)), 3, 4, bind=True).cpus == (12, 13, 14, 15)
    two = plan(m, list(range(16)), 1, 2, bind=True).cpus
    assert {m.cpu(c).node for c in two} == {2, 3}  # a half: two whole nodes, not a mix


def test_a_mask_narrower_than_the_cgroup_is_the_launchers(tmp_path):
    """srun --cpus-per-task=8 with task/affinity: each task's mask is already its own 8
    CPUs. It stands (not sliced again to 2 by local rank), and the record says so."""
    m = two_sockets(tmp_path)
    mask = [4, 5, 6, 7, 20, 21, 22, 23]
    b = plan(m, mask, 1, 4, bind=True)
    assert b == cputopo.Binding(tuple(mask), "launcher")
    assert plan(m, mask, 1, 4, bind=False).how == "launcher"


def test_a_cgroup_that_allows_only_some_cpus(tmp_path):
    """The job's cgroup allows socket 1 only (cgroup v2, nearest ancestor's file). A mask
    equal to it is nobody's binding: hvdbench slices it; a narrower one is the launcher's."""
    allowed = [*range(8, 16), *range(24, 32)]
    m = two_sockets(tmp_path, cgroup=format_cpulist(allowed))
    assert m.allowed == frozenset(allowed)
    b = plan(m, allowed, 1, 2, bind=True)
    assert b.how == "hvdbench" and b.cpus == (12, 13, 14, 15, 28, 29, 30, 31)
    assert plan(m, [8, 24], 0, 2, bind=True).how == "launcher"
    assert plan(m, allowed, 0, 2, bind=False) == cputopo.Binding(tuple(allowed), "none")


def test_cgroup_v1_cpuset(tmp_path):
    m = two_sockets(tmp_path, cgroup_v1="0-3,16-19")
    assert m.allowed == frozenset([0, 1, 2, 3, 16, 17, 18, 19])


def test_a_single_rank_is_left_alone(tmp_path):
    m = two_sockets(tmp_path)
    assert plan(m, list(range(32)), 0, 1, bind=True) == cputopo.Binding(tuple(range(32)), "none")


def test_this_machine_reads(tmp_path):
    m = read_machine()
    assert set(os.sched_getaffinity(0)) <= {c.id for c in m.cpus}
    assert set(os.sched_getaffinity(0)) <= m.allowed


def test_topology_command_alone_and_under_fake_hydra_variables():
    """`hvdbench topology` reads the launcher's variables (here Hydra's, as mpiexec.mpich sets
    them) and reports the CPUs it would bind to; bad overrides are one line, exit 2."""
    import json

    from tests.conftest import base_env, hvdbench

    alone = hvdbench("topology", "--json", timeout=60)
    assert alone.returncode == 0, alone.output
    got = json.loads(alone.stdout)
    assert (got["rank"], got["size"], got["source"], got["binding"]) == (0, 1, "single", "none")
    assert got["cpus"] == sorted(os.sched_getaffinity(0))
    env = base_env({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1",
                    "MPI_LOCALNRANKS": "2"})  # fmt: skip
    r = hvdbench("topology", "--json", "--runtime.bind_cores=false", env=env, timeout=60)
    got = json.loads(r.stdout)
    assert (got["rank"], got["local_rank"], got["source"], got["binding"]) == (
        1,
        1,
        "hydra",
        "none",
    )
    bad = hvdbench("topology", "--runtime.bind_cores=maybe", timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.output
    assert "runtime.bind_cores" in bad.stderr
