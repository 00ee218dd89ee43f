"""Which network a rank uses, and Horovod's Gloo rendezvous for ranks started by ``srun``.

``horovodrun`` starts remote ranks only over ssh, and it is what normally runs Gloo's
rendezvous server. Under ``srun`` there is no such driver, so hvdbench plays its part
(``launch.srun_controller=gloo``): rank 0 serves Horovod's own rendezvous (its
``RendezvousHTTPServer``) on a port every rank can compute from the job and step ids, and
every rank sets the variables Horovod's Gloo context reads (the ones ``gloo_run`` sets):
``HOROVOD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE/CROSS_RANK/CROSS_SIZE/HOSTNAME``,
``HOROVOD_GLOO_RENDEZVOUS_ADDR/PORT``, ``HOROVOD_CONTROLLER=gloo``,
``HOROVOD_CPU_OPERATIONS=gloo`` and ``HOROVOD_GLOO_IFACE``, the interface of this node's
route to rank 0's node (``ip route get ADDR``; for rank 0's own node, the interface that
holds the address).

The parsing and the arithmetic are pure functions of the environment and of ``ip``'s
output, so that they are tested without a cluster.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from hvdbench.errors import ClusterError, UsageError
from hvdbench.launch.topology import Topology, expand_nodelist, expand_tasks_per_node, in_srun_step

PORT_BASE = 15000  # derived ports stay below the kernel's ephemeral range (32768-)
PORT_SPAN = 15000


@dataclass(frozen=True)
class SlurmSlots:
    """Where this task sits among the step's nodes, in Horovod's terms."""

    hosts: tuple[str, ...]
    tasks_per_node: tuple[int, ...]
    rank: int
    size: int
    node_index: int
    local_rank: int

    @property
    def hostname(self) -> str:
        return self.hosts[self.node_index]

    @property
    def local_size(self) -> int:
        return self.tasks_per_node[self.node_index]

    @property
    def cross_rank(self) -> int:
        """Index of this node among the nodes that have a task with this local rank."""
        return sum(1 for n in self.tasks_per_node[: self.node_index] if n > self.local_rank)

    @property
    def cross_size(self) -> int:
        return sum(1 for n in self.tasks_per_node if n > self.local_rank)


def slurm_slots(env: Mapping[str, str]) -> SlurmSlots:
    """This task's slots from the ``srun`` step's variables."""
    if not in_srun_step(env):
        raise UsageError(
            "launch.srun_controller=gloo: not inside an srun step (no SLURM_STEP_ID/SLURM_PROCID)"
        )
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", "")
    hosts = tuple(expand_nodelist(nodelist))
    counts = tuple(expand_tasks_per_node(spec)) if spec else ()
    if not hosts or len(counts) != len(hosts):
        raise UsageError(
            f"launch.srun_controller=gloo: cannot match nodes {nodelist!r} with tasks per node "
            f"{spec!r}"
        )
    return SlurmSlots(
        hosts=hosts,
        tasks_per_node=counts,
        rank=int(env["SLURM_PROCID"]),
        size=int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or sum(counts)),
        node_index=int(env.get("SLURM_NODEID", "0")),
        local_rank=int(env.get("SLURM_LOCALID", "0")),
    )


def rendezvous_port(env: Mapping[str, str], configured: int) -> int:
    """The configured port, or one derived from the job and step ids (same on every rank)."""
    if configured:
        return configured
    job = int(env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or 0)
    step = int(env.get("SLURM_STEP_ID") or 0)
    return PORT_BASE + (job * 97 + step * 13) % PORT_SPAN


def parse_route_dev(route_get: str) -> tuple[str, str]:
    """``(dev, src)`` from ``ip -o route get ADDR`` output."""
    words = route_get.split()
    dev = words[words.index("dev") + 1] if "dev" in words else ""
    src = words[words.index("src") + 1] if "src" in words else ""
    return dev, src


def parse_addr_owner(addr_show: str, address: str) -> str:
    """The interface holding ``address``, from ``ip -o -4 addr show`` output."""
    for line in addr_show.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet" and parts[3].split("/")[0] == address:
            return parts[1]
    return ""


def parse_addr_of(addr_show: str, iface: str) -> str:
    """The first IPv4 address of ``iface``, from ``ip -o -4 addr show`` output."""
    for line in addr_show.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == iface and parts[2] == "inet":
            return parts[3].split("/")[0]
    return ""


def _ip(*args: str) -> str:
    try:
        out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout if out.returncode == 0 else ""


def route_to(address: str) -> tuple[str, str]:
    """``(interface, source address)`` this node uses to reach ``address``.

    For an address of this node the kernel routes through ``lo``; the interface is then the
    one that holds the address, which is what peers on other nodes connect to.
    """
    dev, src = parse_route_dev(_ip("-o", "route", "get", address))
    if dev == "lo":
        owner = parse_addr_owner(_ip("-o", "-4", "addr", "show"), address)
        if owner:
            return owner, address
    return dev, src


def resolve(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return ""


def gloo_env(slots: SlurmSlots, address: str, port: int, iface: str) -> dict[str, str]:
    """What ``gloo_run`` would give this rank."""
    return {
        "HOROVOD_HOSTNAME": slots.hostname,
        "HOROVOD_RANK": str(slots.rank),
        "HOROVOD_SIZE": str(slots.size),
        "HOROVOD_LOCAL_RANK": str(slots.local_rank),
        "HOROVOD_LOCAL_SIZE": str(slots.local_size),
        "HOROVOD_CROSS_RANK": str(slots.cross_rank),
        "HOROVOD_CROSS_SIZE": str(slots.cross_size),
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": address,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_IFACE": iface,
    }


def _plan(slots: SlurmSlots) -> list[Any]:
    """Horovod's slot list for the server's scope sizes (global, local_<host>, cross_<l>)."""
    from horovod.runner.common.util.hosts import SlotInfo

    counts = slots.tasks_per_node
    plan, rank = [], 0
    for i, (host, count) in enumerate(zip(slots.hosts, counts)):
        for local in range(count):
            cross_size = sum(1 for n in counts if n > local)
            cross = sum(1 for n in counts[:i] if n > local)
            plan.append(SlotInfo(host, rank, local, cross, slots.size, count, cross_size))
            rank += 1
    return plan


class GlooRendezvous:
    """Rank 0's server (a daemon thread for the life of the process) and every rank's env."""

    def __init__(self, slots: SlurmSlots, address: str, port: int, iface: str) -> None:
        self.slots, self.address, self.port, self.iface = slots, address, port, iface
        self._server: Any = None

    def serve(self) -> None:
        from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

        try:
            self._server = RendezvousHTTPServer(("", self.port), RendezvousHandler, 0)
        except OSError as e:
            raise ClusterError(
                f"launch.rendezvous_port: cannot serve Gloo's rendezvous on "
                f"{self.slots.hostname}:{self.port} ({e.strerror}); set another port"
            ) from None
        self._server.init(_plan(self.slots))
        threading.Thread(
            target=self._server.serve_forever, name="hvdbench-gloo-rendezvous", daemon=True
        ).start()

    def wait_for_server(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection((self.address, self.port), timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"rank {self.slots.rank} on host {self.slots.hostname}: Gloo's rendezvous "
                        f"on {self.slots.hosts[0]} ({self.address}:{self.port}) is unreachable "
                        f"after {timeout_s:g} s (launch.startup_timeout_s): rank 0 never served it"
                    ) from None
                time.sleep(0.2)

    def describe(self) -> dict[str, Any]:
        return {
            "rendezvous": f"{self.address}:{self.port}",
            "rendezvous_host": self.slots.hosts[0],
            "gloo_iface": self.iface,
        }


def start_gloo_rendezvous(
    env: Mapping[str, str], configured_port: int, timeout_s: float
) -> tuple[GlooRendezvous, dict[str, str]]:
    """Serve (rank 0) or find (other ranks) the rendezvous; return Horovod's variables."""
    slots = slurm_slots(env)
    first = slots.hosts[0]
    address = resolve(first)
    if not address:
        raise ClusterError(f"launch.srun_controller=gloo: cannot resolve rank 0's node {first!r}")
    iface, _src = route_to(address)
    if not iface:
        raise ClusterError(f"launch.srun_controller=gloo: no route to {first} ({address})")
    r = GlooRendezvous(slots, address, rendezvous_port(env, configured_port), iface)
    if slots.rank == 0:
        if slots.node_index != 0:
            raise ClusterError(
                f"launch.srun_controller=gloo: rank 0 runs on {slots.hostname}, not on the "
                f"step's first node {first}"
            )
        r.serve()
    else:
        r.wait_for_server(timeout_s)
    return r, gloo_env(slots, address, r.port, iface)


def own_gloo_rendezvous(srun_controller: str, topo: Topology) -> bool:
    """Whether hvdbench runs Horovod's Gloo rendezvous itself: ranks started by srun (no
    horovodrun to run it) with ``launch.srun_controller = gloo``."""
    return srun_controller == "gloo" and topo.source in ("pmix", "slurm")


def join_gloo_rendezvous(
    env: MutableMapping[str, str], configured_port: int, timeout_s: float
) -> GlooRendezvous:
    """Serve or find the rendezvous and set Horovod's Gloo variables in ``env`` (before
    ``hvd.init()``); the server lives as long as the returned object is kept."""
    rendezvous, gloo = start_gloo_rendezvous(env, configured_port, timeout_s)
    env.update(gloo)
    return rendezvous


# ---------------------------------------------------------------------------------------
# What the record says about this rank's network


def _peer(env: Mapping[str, str], me: str) -> str:
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
    others = [h for h in expand_nodelist(nodelist) if h != me] if nodelist else []
    return others[0] if others else ""


def describe(env: Mapping[str, str], topo: Topology) -> dict[str, Any]:
    """This rank's interface and address for traffic to the other nodes, and how it was
    chosen: Horovod's Gloo interface when set, else MPI's ``btl_tcp_if_include``, else the
    route to another node of the Slurm job, else the route to this host's own name."""
    iface = env.get("HOROVOD_GLOO_IFACE", "")
    if iface:
        addr = parse_addr_of(_ip("-o", "-4", "addr", "show"), iface)
        return {"interface": iface, "address": addr, "how": "HOROVOD_GLOO_IFACE"}
    iface = env.get("OMPI_MCA_btl_tcp_if_include", "")
    if iface:
        addr = parse_addr_of(_ip("-o", "-4", "addr", "show"), iface)
        return {"interface": iface, "address": addr, "how": "OMPI_MCA_btl_tcp_if_include"}
    peer = _peer(env, topo.hostname)
    target = resolve(peer) if peer else resolve(topo.hostname)
    if not target:
        return {"interface": None, "address": None, "how": "unknown"}
    dev, src = route_to(target)
    return {
        "interface": dev or None,
        "address": src or None,
        "how": f"route to {peer}" if peer else f"route to {topo.hostname}",
    }


def advertise_host(env: Mapping[str, str], topo: Topology) -> str:
    """The host a gRPC task advertises: its name, unless that resolves to loopback while the
    job spans other nodes (Debian's ``127.0.1.1 hostname``), then its routed address."""
    addr = resolve(topo.hostname)
    if addr and not addr.startswith("127."):
        return topo.hostname
    peer = _peer(env, topo.hostname)
    if peer:
        target = resolve(peer)
        if target:
            _dev, src = route_to(target)
            if src:
                return src
    return topo.hostname
