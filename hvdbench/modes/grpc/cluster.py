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
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvdbench.config import parse_host_list
from hvdbench.errors import UsageError
from hvdbench.launch.job import Role

if TYPE_CHECKING:
    from hvdbench.config import Config

LOOPBACK = "127.0.0.1"


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


# Ports hvdbench picks itself come from below the kernel's ephemeral range: a port the
# kernel chose (bind to 0) is free again once it is released, and until the task's server
# binds it seconds later the kernel may hand it to any process's outgoing connection, the
# job's own among them. Below the range only an explicit bind can take it.
PICK_FROM = 10000
EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_low(path: str = EPHEMERAL_RANGE) -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int, base: int = 0, *, low: int | None = None) -> list[int]:
    """``n`` distinct ports that are free now: from ``base`` upwards, or picked at random
    below the kernel's ephemeral range (:data:`PICK_FROM` up to ``low``).

    The picked ports are held open together, so that they are distinct; they are free
    again when this returns, and the servers bind them moments later. Where the range
    below the ephemeral one is too small, the kernel chooses.
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
    top = ephemeral_low() if low is None else low
    candidates = list(range(PICK_FROM, top)) if top - PICK_FROM >= 16 * n else []
    random.SystemRandom().shuffle(candidates)
    socks: list[socket.socket] = []
    try:
        for port in candidates:
            if len(socks) == n:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < n:  # no room below the ephemeral range: the kernel's choice
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def exchange_addresses(my_address: str) -> list[str]:
    """Every rank's address, in rank order, through an mpi4py allgather.

    Bound: O(ranks) per rank (about 25 bytes a rank), the one start-up exchange that is
    not O(1) per worker: every task's gRPC server is given the whole ``ClusterSpec``, so
    every task needs every address. Roles are O(1): :meth:`JobLayout.role
    <hvdbench.launch.job.JobLayout.role>` computes them from the rank, with no exchange."""
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
