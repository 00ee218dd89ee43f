"""The gRPC cluster of the ps/worker modes: host lists, roles, ports, TF_CONFIG.

Pure functions plus two small socket helpers, no TensorFlow, so that the config layer can
validate a cluster's arithmetic before anything heavy is imported.

Roles:

* **explicit**: ``cluster.ps_hosts`` / ``cluster.worker_hosts`` and this process's
  ``cluster.job_name`` / ``cluster.task_index``;
* **from ranks** (``mpirun``, ``srun --mpi=pmix``): the first ``ps.num_ps`` ranks are ps
  tasks, the rest workers, and the (host, port) pairs are exchanged with mpi4py, so the
  user writes no host lists; the chief is worker 0, i.e. rank ``num_ps``, not rank 0;
* **spawned**: ``hvdbench run`` alone starts every task itself on loopback ports.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvdbench.errors import UsageError

if TYPE_CHECKING:
    from hvdbench.config import Config

LOOPBACK = "127.0.0.1"


class ClusterError(RuntimeError):
    """A task of the cluster could not be reached or went away: one line, exit 1."""


@dataclass(frozen=True)
class Role:
    """This process's task in the cluster."""

    job: str  # "ps" or "worker"
    index: int

    @property
    def is_ps(self) -> bool:
        return self.job == "ps"


@dataclass(frozen=True)
class ClusterSpec:
    """The tasks of a cluster, as ``host:port`` strings, ps first then workers."""

    ps: tuple[str, ...]
    worker: tuple[str, ...]

    def as_dict(self) -> dict[str, list[str]]:
        """The dictionary ``tf.train.ClusterSpec`` takes (no ps job when there is none)."""
        d = {"worker": list(self.worker)}
        if self.ps:
            d = {"ps": list(self.ps), **d}
        return d

    def address(self, role: Role) -> str:
        return (self.ps if role.is_ps else self.worker)[role.index]


def parse_host_list(text: str, key: str) -> list[str]:
    """``'a:2222,b:2222'`` -> ``['a:2222', 'b:2222']``, each checked as host:port."""
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    for h in hosts:
        host, sep, port = h.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"{key}: cannot read {h!r}; expected host:port, e.g. 'node1:2222'")
    return hosts


def world_formula(num_ps: int, workers: int) -> str:
    """How the processes of a ps job add up, for error messages."""
    return f"ps({num_ps}) + workers({workers})"


def needs_ps(mode: str) -> bool:
    from hvdbench.config import PS_MODES

    return mode in PS_MODES


def validate_cluster(cfg: Config) -> None:
    """The cross-key checks of a mode that takes cluster roles (the gRPC modes): host
    lists, ps tasks and workers add up; raise UsageError. What each mode supports at all
    is checked before, against its declaration (:mod:`hvdbench.modes.capabilities`)."""
    mode, ps, cl, np = cfg.mode.name, cfg.ps, cfg.cluster, cfg.launch.np
    ps_hosts = parse_host_list(cl.ps_hosts, "cluster.ps_hosts")
    worker_hosts = parse_host_list(cl.worker_hosts, "cluster.worker_hosts")
    if not needs_ps(mode):
        if ps_hosts or cl.job_name == "ps":
            raise UsageError(f"cluster: mode {mode} has no ps tasks; leave cluster.ps_hosts empty")
    elif ps_hosts and len(ps_hosts) != ps.num_ps:
        raise UsageError(f"cluster.ps_hosts: {len(ps_hosts)} host(s) != ps.num_ps({ps.num_ps})")
    if worker_hosts and np and len(worker_hosts) != np:
        raise UsageError(f"cluster.worker_hosts: {len(worker_hosts)} host(s) != launch.np({np})")
    workers = len(worker_hosts) or np
    if needs_ps(mode) and ps.sync and workers and ps.replicas_to_aggregate > workers:
        raise UsageError(
            f"ps.replicas_to_aggregate({ps.replicas_to_aggregate}) > workers({workers}); "
            f"use 0 (all workers) to {workers}"
        )
    if ps.debug_slow_worker >= 0 and workers and ps.debug_slow_worker >= workers:
        raise UsageError(
            f"ps.debug_slow_worker({ps.debug_slow_worker}) >= workers({workers}); use -1 or "
            f"0 to {workers - 1}"
        )
    if cl.job_name:
        if not worker_hosts or (needs_ps(mode) and not ps_hosts):
            need = (
                "cluster.ps_hosts and cluster.worker_hosts"
                if needs_ps(mode)
                else ("cluster.worker_hosts")
            )
            raise UsageError(f"cluster.job_name={cl.job_name!r} needs {need}")
        count = len(ps_hosts) if cl.job_name == "ps" else len(worker_hosts)
        if cl.task_index >= count:
            raise UsageError(f"cluster.task_index({cl.task_index}) >= {cl.job_name} tasks({count})")
    elif ps_hosts or worker_hosts:
        raise UsageError(
            "cluster.job_name: set ps or worker with explicit host lists, or leave the host "
            "lists empty for hvdbench to find them"
        )


def role_from_rank(rank: int, size: int, num_ps: int) -> Role:
    """The first ``num_ps`` ranks are ps tasks, the rest workers (worker 0 is the chief)."""
    if size <= num_ps:
        raise UsageError(
            f"launch.np: {world_formula(num_ps, size - num_ps)} leaves no worker among "
            f"ranks({size}); start at least {num_ps + 1} processes"
        )
    if rank < num_ps:
        return Role("ps", rank)
    return Role("worker", rank - num_ps)


def core_slot(
    cfg: Config, rank: int, local_rank: int, local_size: int, num_ps: int
) -> tuple[int, int]:
    """(index, count) of this task among the workers that split its node's cores; a ps
    task gets (0, 1): every core, unbound.

    A ps task's work (serving the variables, applying updates) comes in bursts while the
    workers wait for it, so it floats over the cores the workers hold, rather than taking
    a slice of its own from them or, with fewer cores than tasks, sharing one core with
    one worker while the other worker has a core alone.

    * Explicit cluster (also hvdbench's own local launcher): the workers whose address has
      this worker's host split the cores, in task order.
    * Roles from ranks (mpirun, srun): the first ``num_ps`` ranks are the ps tasks; with
      the launcher's block placement (consecutive ranks fill a node), the ps ranks on this
      node come before its workers, so the worker's slot is its local rank less those.
    """
    if cfg.cluster.job_name:
        if cfg.cluster.job_name == "ps":
            return (0, 1)
        workers = explicit_spec(cfg).worker
        host = workers[cfg.cluster.task_index].rpartition(":")[0]
        here = [i for i, a in enumerate(workers) if a.rpartition(":")[0] == host]
        return (here.index(cfg.cluster.task_index), len(here))
    if rank < num_ps:
        return (0, 1)
    first = rank - local_rank  # the node's first rank, with block placement
    ps_here = min(max(num_ps - first, 0), local_size)
    index, count = local_rank - ps_here, local_size - ps_here
    return (index, count) if 0 <= index < count else (local_rank, local_size)


def check_ranks(num_ps: int, np: int, size: int) -> None:
    """A launcher's process count must be num_ps + workers, when np is given."""
    if np and num_ps + np != size:
        raise UsageError(
            f"launch.np: {world_formula(num_ps, np)} != ranks({size}); start "
            f"{num_ps + np} processes, or set --launch.np=0 to take workers from the launcher"
        )


def spec_from_ranks(addresses: Sequence[str], num_ps: int) -> ClusterSpec:
    """The cluster from every rank's ``host:port`` in rank order."""
    return ClusterSpec(tuple(addresses[:num_ps]), tuple(addresses[num_ps:]))


def explicit_spec(cfg: Config) -> ClusterSpec:
    ps = parse_host_list(cfg.cluster.ps_hosts, "cluster.ps_hosts")
    workers = parse_host_list(cfg.cluster.worker_hosts, "cluster.worker_hosts")
    return ClusterSpec(tuple(ps), tuple(workers))


def local_spec(num_ps: int, num_workers: int, ports: Sequence[int]) -> ClusterSpec:
    """A loopback cluster on the given ports, ps first."""
    addrs = [f"{LOOPBACK}:{p}" for p in ports]
    return spec_from_ranks(addrs, num_ps)


def tf_config(spec: ClusterSpec, role: Role) -> str:
    """The ``TF_CONFIG`` JSON that tf.distribute's cluster resolvers read."""
    return json.dumps({"cluster": spec.as_dict(), "task": {"type": role.job, "index": role.index}})


# ---------------------------------------------------------------------------------------
# Ports


def port_in_use(port: int, host: str = "") -> bool:
    """True when ``port`` cannot be bound on all interfaces, as TensorFlow's server would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def check_port_free(address: str, what: str) -> None:
    """A one-line UsageError naming the port when a server could not listen on it."""
    port = int(address.rpartition(":")[2])
    if port_in_use(port):
        raise UsageError(f"port {port} ({what} {address}) is already in use; choose another")


def free_ports(n: int, base: int = 0) -> list[int]:
    """``n`` distinct ports that are free now: from ``base`` upwards, or the kernel's choice.

    Kernel-chosen ports are held open together so that they are distinct; they are free
    again when this returns, and the servers bind them moments later.
    """
    if base:
        ports: list[int] = []
        port = base
        while len(ports) < n:
            if port > 65535:
                raise UsageError(f"cluster.base_port: no {n} free ports from {base} upwards")
            if not port_in_use(port):
                ports.append(port)
            port += 1
        return ports
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def exchange_addresses(my_address: str) -> list[str]:
    """Every rank's address, in rank order, through an mpi4py allgather."""
    from mpi4py import MPI

    return list(MPI.COMM_WORLD.allgather(my_address))


def describe(spec: ClusterSpec, role: Role) -> dict[str, Any]:
    """The cluster for the record, with the address each advertised host resolves to (a
    host resolving to loopback cannot be reached from another node)."""
    hosts = {a.rpartition(":")[0] for a in (*spec.ps, *spec.worker)}
    return {
        "cluster": spec.as_dict(),
        "job": role.job,
        "task_index": role.index,
        "resolved": {h: _resolve(h) for h in sorted(hosts)},
    }


def _resolve(host: str) -> str | None:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return None
