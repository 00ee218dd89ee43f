"""The machine's CPUs as Linux describes them, and which of them one rank should use.

Linux numbers a core's hardware threads apart (on a 16-core socket cpu0 and cpu16 are the
two threads of core 0), so a slice of sorted CPU ids is not a slice of cores. The topology
is read from sysfs (``/sys/devices/system/cpu/cpuN/topology``, ``/sys/devices/system/node``)
and the cgroup's ``cpuset.cpus.effective`` by :func:`read_machine`, which takes the root of
the tree so that tests point it at a fake one.

:func:`plan` decides a rank's CPUs:

- a launcher that already bound the process (Slurm's ``task/affinity``/``task/cgroup`` with
  ``--cpu-bind``/``--cpus-per-task``, ``mpirun --bind-to core|socket|numa``) leaves it a mask
  that is a strict subset of what its cgroup allows: that binding stands (``launcher``);
- otherwise, when asked to, hvdbench slices the mask by physical core, in NUMA-node order,
  so that a rank's cores stay in one NUMA node where the counts allow, and hands out single
  hardware threads only when there are more ranks than cores (``hvdbench``);
- otherwise the mask stays as it is (``none``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

LAUNCHER, HVDBENCH, NONE = "launcher", "hvdbench", "none"


@dataclass(frozen=True)
class Cpu:
    """One logical CPU (a hardware thread)."""

    id: int
    package: int
    core: int  # core_id within the package
    node: int  # NUMA node, 0 without NUMA information


@dataclass(frozen=True)
class Machine:
    """The online CPUs and the ones this process's cgroup allows."""

    cpus: tuple[Cpu, ...]
    allowed: frozenset[int]

    @cached_property
    def _by_id(self) -> dict[int, Cpu]:
        return {c.id: c for c in self.cpus}

    def cpu(self, cpu_id: int) -> Cpu:
        """CPU ``cpu_id``; one sysfs does not list is taken as a core of its own."""
        return self._by_id.get(cpu_id) or Cpu(cpu_id, 0, cpu_id, 0)


@dataclass(frozen=True)
class Binding:
    """A rank's CPUs and who chose them."""

    cpus: tuple[int, ...]
    how: str  # launcher | hvdbench | none


def parse_cpulist(text: str) -> list[int]:
    """Linux's CPU list format: ``0-3,8,10-11`` -> ``[0, 1, 2, 3, 8, 10, 11]``."""
    out: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi.split(":")[0]) + 1))
        else:
            out.append(int(part))
    return sorted(set(out))


def format_cpulist(cpus: Iterable[int]) -> str:
    """The inverse of :func:`parse_cpulist`: ``[0, 1, 2, 5]`` -> ``0-2,5``."""
    ids = sorted(set(cpus))
    runs: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        runs.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(runs)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int_file(path: Path, default: int) -> int:
    text = _read(path)
    return int(text) if text is not None and text.lstrip("-").isdigit() else default


def cgroup_cpus(root: Path) -> list[int] | None:
    """The CPUs this process's cgroup allows: cgroup v2's ``cpuset.cpus.effective`` (the
    nearest ancestor that has one) or v1's ``cpuset.effective_cpus``; None if neither."""
    text = _read(root / "proc/self/cgroup") or ""
    v2_path, v1_path = None, None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif "cpuset" in parts[1].split(","):
            v1_path = parts[2]
    candidates: list[Path] = []
    if v2_path is not None:
        d = root / "sys/fs/cgroup" / v2_path.lstrip("/")
        base = root / "sys/fs/cgroup"
        while True:
            candidates.append(d / "cpuset.cpus.effective")
            if d == base or base not in d.parents:
                break
            d = d.parent
    if v1_path is not None:
        candidates.append(
            root / "sys/fs/cgroup/cpuset" / v1_path.lstrip("/") / "cpuset.effective_cpus"
        )
    for path in candidates:
        value = _read(path)
        if value:
            return parse_cpulist(value)
    return None


def read_machine(root: Path | str = "/") -> Machine:
    """The online CPUs' packages, cores and NUMA nodes, and the cgroup's CPUs, from the
    sysfs and procfs under ``root``."""
    root = Path(root)
    cpu_dir = root / "sys/devices/system/cpu"
    online_text = _read(cpu_dir / "online")
    if online_text:
        online = parse_cpulist(online_text)
    else:
        online = sorted(int(p.name[3:]) for p in cpu_dir.glob("cpu[0-9]*") if p.name[3:].isdigit())
    nodes: dict[int, int] = {}
    for node in sorted((root / "sys/devices/system/node").glob("node[0-9]*")):
        text = _read(node / "cpulist")
        if text:
            for c in parse_cpulist(text):
                nodes.setdefault(c, int(node.name[4:]))
    cpus = tuple(
        Cpu(
            c,
            _int_file(cpu_dir / f"cpu{c}/topology/physical_package_id", 0),
            _int_file(cpu_dir / f"cpu{c}/topology/core_id", c),
            nodes.get(c, 0),
        )
        for c in online
    )
    allowed = cgroup_cpus(root)
    ids = {c.id for c in cpus}
    return Machine(cpus, frozenset(ids & set(allowed)) if allowed else frozenset(ids))


def launcher_bound(machine: Machine, mask: Iterable[int]) -> bool:
    """True when ``mask`` is a strict subset of the CPUs the cgroup allows: someone (the
    launcher) chose it for this process."""
    m = set(mask)
    return bool(m) and m < set(machine.allowed)


def cores_of(machine: Machine, mask: Iterable[int]) -> list[list[int]]:
    """The physical cores in ``mask`` (each the sorted ids of its threads in the mask), in
    NUMA-node, package, core order."""
    by_core: dict[tuple[int, int, int], list[int]] = {}
    for cpu_id in sorted(set(mask)):
        c = machine.cpu(cpu_id)
        by_core.setdefault((c.node, c.package, c.core), []).append(cpu_id)
    return [by_core[k] for k in sorted(by_core)]


def core_share(machine: Machine, mask: Sequence[int], index: int, count: int) -> list[int]:
    """The ``index``-th of ``count`` equal shares of ``mask``, by physical core.

    With at least as many cores as ranks, each rank takes whole cores (all their threads),
    consecutive in NUMA order: with 2 nodes of 8 cores, 4 ranks take 4 cores each and
    ranks 0-1 stay on node 0. With more ranks than cores, ranks take single threads (core
    by core); with more ranks than threads, one thread each, shared round-robin."""
    cores = cores_of(machine, mask)
    if count <= 1 or not cores:
        return sorted(set(mask))
    if count <= len(cores):
        per = len(cores) // count
        return sorted(c for core in cores[index * per : (index + 1) * per] for c in core)
    threads = [c for core in cores for c in core]
    per = len(threads) // count
    if per == 0:
        return [threads[index % len(threads)]]
    return sorted(threads[index * per : (index + 1) * per])


def plan(machine: Machine, mask: Sequence[int], index: int, count: int, bind: bool) -> Binding:
    """This rank's CPUs: the launcher's binding if it made one, else hvdbench's share when
    ``bind`` (and the node is shared), else ``mask`` untouched."""
    current = tuple(sorted(set(mask)))
    if launcher_bound(machine, current):
        return Binding(current, LAUNCHER)
    if bind and count > 1:
        return Binding(tuple(core_share(machine, current, index, count)), HVDBENCH)
    return Binding(current, NONE)
