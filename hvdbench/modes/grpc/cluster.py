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

What each task knows (:class:`TaskView`, :func:`task_view`) and what its gRPC server is
given (:func:`server_cluster`) are kept to what it needs, so that a job of thousands of
ranks costs no worker O(ranks) at start-up:

* a **ps task** knows every address: it serves every worker, and TensorFlow's gRPC
  transport is pulled by the receiver (the ps calls ``RecvTensor`` on the worker that
  computed a gradient), so its server must resolve every worker from its ClusterSpec;
* the **chief** (worker 0) knows every address, for the record; its server, as every
  worker's, is given the ps tasks and itself only;
* **worker i** knows the ps addresses and its own: O(num_ps), whatever the job's size.
  Its sessions' ``device_filters`` (``/job:ps``, ``/job:worker/task:i``) keep it from
  ever needing another worker: the chief initialises the variables on the ps, and
  ``SyncReplicasOptimizer``'s queues, the control plane and the gather queue are on the
  ps tasks.

``collective_all_reduce`` is the exception: ``MultiWorkerMirroredStrategy`` reads every
worker's address from ``TF_CONFIG``, so there every task knows the whole cluster.
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


@dataclass(frozen=True)
class TaskView:
    """The part of a cluster one task knows: every ps address, the workers it needs by
    index (all of them, or only itself), and how many workers the job has."""

    ps: tuple[str, ...]
    workers: tuple[tuple[int, str], ...]  # (worker index, host:port), by index
    num_workers: int

    @classmethod
    def whole(cls, spec: ClusterSpec) -> TaskView:
        """A view of the whole cluster (explicit, spawned, TF_CONFIG, the chief's)."""
        return cls(spec.ps, tuple(enumerate(spec.worker)), len(spec.worker))

    @property
    def complete(self) -> bool:
        """Whether every worker's address is known."""
        return len(self.workers) == self.num_workers

    @property
    def num_addresses(self) -> int:
        """How many addresses this task holds: O(ranks) complete, O(num_ps) sparse."""
        return len(self.ps) + len(self.workers)

    def spec(self) -> ClusterSpec:
        """The whole cluster; only a complete view has it."""
        if not self.complete:
            raise ValueError(
                f"this task knows {len(self.workers)} of {self.num_workers} workers, "
                "not the whole cluster"
            )
        return ClusterSpec(self.ps, tuple(a for _, a in self.workers))

    def as_dict(self) -> dict[str, Any]:
        """The dictionary ``tf.train.ClusterSpec`` takes: the worker job as a list when
        complete, as a sparse ``{index: address}`` otherwise."""
        workers: Any = [a for _, a in self.workers] if self.complete else dict(self.workers)
        return {"ps": list(self.ps), "worker": workers} if self.ps else {"worker": workers}

    def address(self, role: Role) -> str:
        if role.is_ps:
            return self.ps[role.index]
        for index, address in self.workers:
            if index == role.index:
                return address
        raise ValueError(f"worker {role.index}'s address is not known to this task")


def task_view(spec: ClusterSpec, role: Role) -> TaskView:
    """What ``role`` is given of the whole cluster ``spec``: everything for a ps task
    (its server serves every worker) and for the chief (the record); the ps tasks and
    itself for any other worker, O(num_ps) however many workers there are."""
    if role.is_ps or role.index == 0:
        return TaskView.whole(spec)
    return TaskView(spec.ps, ((role.index, spec.worker[role.index]),), len(spec.worker))


def task_views(addresses: Sequence[str], num_ps: int) -> list[TaskView]:
    """Every rank's :func:`task_view`, in rank order, from every rank's address in rank
    order (the first ``num_ps`` ranks are the ps tasks): what rank 0 scatters."""
    spec = spec_from_ranks(addresses, num_ps)
    roles = [
        Role("ps", r) if r < num_ps else Role("worker", r - num_ps)
        for r in range(len(spec.ps) + len(spec.worker))
    ]
    return [task_view(spec, role) for role in roles]


def server_cluster(view: TaskView, role: Role) -> dict[str, Any]:
    """The sparse cluster ``role``'s gRPC server is given: a ps task's server every task
    (it receives from every worker); a worker's the ps tasks and itself, as its
    sessions' ``device_filters`` (``runtime.session_config``) see them."""
    if role.is_ps:
        return view.as_dict()
    sparse = TaskView(view.ps, ((role.index, view.address(role)),), view.num_workers)
    return sparse.as_dict()


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
    """Every rank's address, in rank order, to every rank (an mpi4py allgather).

    Bound: O(ranks) per rank (about 25 bytes a rank). Only ``collective_all_reduce`` uses
    it: ``MultiWorkerMirroredStrategy`` needs every worker's address in ``TF_CONFIG``.
    The ps modes use :func:`scatter_addresses`. Roles are O(1): :meth:`JobLayout.role
    <hvdbench.launch.job.JobLayout.role>` computes them from the rank, with no exchange."""
    from mpi4py import MPI

    return list(MPI.COMM_WORLD.allgather(my_address))


def scatter_addresses(my_address: str, num_ps: int) -> TaskView:
    """This rank's :func:`task_view`: every rank's address is gathered to rank 0 (an
    mpi4py gather), which builds each rank's view and scatters it.

    Bound, kept for jobs of thousands of ranks: rank 0 (ps task 0) receives O(ranks) and
    sends O(ranks) to each ps task and to the chief, so O(ranks x num_ps) in all; each ps
    task and the chief receive O(ranks); any other worker sends its own address and
    receives O(num_ps), independent of the number of ranks."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    addresses = comm.gather(my_address, root=0)  # None except on rank 0
    views = task_views(addresses, num_ps) if addresses is not None else None
    view: TaskView = comm.scatter(views, root=0)
    return view


def mpi_world_size() -> int:
    """How many ranks mpi4py sees (a mismatch with the launcher's is a wrong mpi4py)."""
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.Get_size())


def describe(view: TaskView, role: Role) -> dict[str, Any]:
    """The cluster for the record, as far as this task knows it (the chief: all of it; a
    worker: the ps tasks and itself, its worker job a sparse ``{index: address}``), with
    the address each advertised host resolves to (a host resolving to loopback cannot be
    reached from another node)."""
    hosts = {a.rpartition(":")[0] for a in (*view.ps, *(a for _, a in view.workers))}
    listed = view.as_dict()
    if not view.complete:
        listed["worker"] = {str(i): a for i, a in view.workers}
    return {
        "cluster": listed,
        "cluster_complete": view.complete,
        "job": role.job,
        "task_index": role.index,
        "resolved": {h: _resolve(h) for h in sorted(hosts)},
    }


def _resolve(host: str) -> str | None:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return None
