"""A multi-node Slurm cluster on one machine: network namespaces on a Linux bridge.

Most of what breaks on a real cluster shows up only across nodes (local against global rank,
host lists, servers advertised on loopback, the wrong network interface). This module gives
each "node" its own network namespace, address, hostname and ``slurmd``, so that hvdbench's
Slurm scripts run across real (virtual) links::

    python -m hvdbench.testbed.netcluster up [--nodes 2] [--rate 1gbit]   # prints SLURM_CONF
    python -m hvdbench.testbed.netcluster status | down | exec NODE -- CMD | cut NODE | restore NODE

Layout, for the default name ``hvdnet`` and subnet ``10.213.0``:

* bridge ``hvdnet-br`` at 10.213.0.1 on the host; node *k* is the namespace ``hvdnetK``
  with ``eth0`` at 10.213.0.1K, wired to the bridge by the veth ``hvdnet-vK``;
* an optional per-link rate limit: ``tc tbf`` on both ends of each veth (tbf shapes only
  what leaves an interface), with a burst of at least 64 KiB;
* ``munged`` and ``slurmctld`` on the host (``SlurmctldHost=<host>(10.213.0.1)``), and per
  node ``slurmd -N hvdnetK`` started with ``nsenter --net`` (not ``ip netns exec``, which
  remounts /sys and breaks slurmd) inside ``unshare --mount --uts``: its own hostname, and
  its own tmpfs at the PMIx client directory (``PMIxCliTmpDirBase`` in mpi.conf), which the
  nodes would otherwise share;
* ``/etc/hosts`` lines ``10.213.0.1K hvdnetK``, tagged with the cluster's name, so that every
  node (and the host) resolves every other node;
* every file (munge key and socket, slurm.conf, state, spool, logs) under
  ``/run/hvdbench-net/NAME``; clients find the cluster through ``SLURM_CONF``.

``up`` is idempotent: what exists is kept, what is missing is made. ``down`` removes exactly
what ``up`` made: the processes inside the namespaces or started through this cluster's
config, the namespaces, the bridge, the tagged ``/etc/hosts`` lines and the state directory.
The command builders are pure functions returning ``list[str]``, so their argv is tested.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hvdbench.testbed import slurm_conf as slurm_conf_text
from hvdbench.testbed import slurm_daemons

MAX_NODES = 4
MIN_BURST_BYTES = 64 * 1024
HOSTS_FILE = Path("/etc/hosts")
STATE_ROOT = "/run/hvdbench-net"
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_SUBNET = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
_SIZE = re.compile(r"^(\d+)(b|kb|k|mb|m)?$", re.IGNORECASE)
_UNIT = {"b": 1, "k": 1024, "kb": 1024, "m": 1024 * 1024, "mb": 1024 * 1024}


class NetClusterError(RuntimeError):
    """Bad arguments or a step that failed: one line for the user."""


@dataclass(frozen=True)
class NetSpec:
    """What cluster to build. Everything it makes is named after ``name``."""

    name: str = "hvdnet"
    nodes: int = 2
    subnet: str = "10.213.0"
    rate: str = ""  # tc rate per link and direction, e.g. "1gbit"; "" = unlimited
    burst: str = "256kb"
    cpus: int = 4  # CPUs each node declares to Slurm (more than the machine has is fine)
    state_root: str = STATE_ROOT

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise NetClusterError(
                f"--name: {self.name!r} must be 1-8 lower-case letters/digits starting with a "
                "letter (interface names are limited to 15 characters)"
            )
        if not 1 <= self.nodes <= MAX_NODES:
            raise NetClusterError(f"--nodes: {self.nodes} is not in 1..{MAX_NODES}")
        m = _SUBNET.match(self.subnet)
        if not m or any(int(x) > 255 for x in m.groups()):
            raise NetClusterError(f"--subnet: {self.subnet!r} is not three octets like 10.213.0")
        if self.rate and not _RATE.match(self.rate):
            raise NetClusterError(f"--rate: {self.rate!r} is not a tc rate like 1gbit or 500mbit")
        if burst_bytes(self.burst) < MIN_BURST_BYTES:
            raise NetClusterError(
                f"--burst: {self.burst!r} is below 64 KiB; tbf then drops full-size bursts"
            )
        if self.cpus < 1:
            raise NetClusterError(f"--cpus: must be >= 1, got {self.cpus}")

    # names and addresses
    @property
    def bridge(self) -> str:
        return f"{self.name}-br"

    @property
    def bridge_address(self) -> str:
        return f"{self.subnet}.1"

    def node(self, k: int) -> str:
        """Node k (from 1): its Slurm name, hostname and namespace name."""
        return f"{self.name}{k}"

    def address(self, k: int) -> str:
        return f"{self.subnet}.{10 + k}"

    def host_veth(self, k: int) -> str:
        return f"{self.name}-v{k}"

    @property
    def node_names(self) -> list[str]:
        return [self.node(k) for k in range(1, self.nodes + 1)]

    @property
    def root(self) -> Path:
        return Path(self.state_root) / self.name

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def index_of(self, node: str) -> int:
        for k in range(1, self.nodes + 1):
            if node in (self.node(k), str(k), self.address(k)):
                return k
        raise NetClusterError(f"node {node!r} is not one of: {', '.join(self.node_names)}")


def burst_bytes(text: str) -> int:
    m = _SIZE.match(text.strip())
    if not m:
        raise NetClusterError(f"--burst: cannot read {text!r}; expected e.g. 256kb")
    return int(m.group(1)) * _UNIT[(m.group(2) or "b").lower()]


# ---------------------------------------------------------------------------------------
# Pure command builders


def bridge_commands(spec: NetSpec) -> list[list[str]]:
    """The host's bridge, with the cluster's first address (slurmctld listens there)."""
    br = spec.bridge
    return [
        ["ip", "link", "add", br, "type", "bridge"],
        ["ip", "addr", "add", f"{spec.bridge_address}/24", "dev", br],
        ["ip", "link", "set", br, "up"],
    ]


def node_link_commands(spec: NetSpec, k: int) -> list[list[str]]:
    """Namespace k and its veth: ``eth0`` inside with the node's address, the peer on the bridge."""
    ns, veth = spec.node(k), spec.host_veth(k)
    return [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
        ["ip", "link", "set", veth, "master", spec.bridge, "up"],
        ["ip", "-n", ns, "addr", "add", f"{spec.address(k)}/24", "dev", "eth0"],
        ["ip", "-n", ns, "link", "set", "eth0", "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
    ]


def rate_commands(spec: NetSpec, k: int) -> list[list[str]]:
    """``tbf`` on both ends of node k's link (it shapes egress only): host side and eth0.

    ``replace`` makes it idempotent; without a rate the qdiscs are removed (which fails
    harmlessly when there is none).
    """
    ns, veth = spec.node(k), spec.host_veth(k)
    if not spec.rate:
        return [
            ["tc", "qdisc", "del", "dev", veth, "root"],
            ["tc", "-n", ns, "qdisc", "del", "dev", "eth0", "root"],
        ]
    tbf = ["root", "tbf", "rate", spec.rate, "burst", spec.burst, "latency", "100ms"]
    return [
        ["tc", "qdisc", "replace", "dev", veth, *tbf],
        ["tc", "-n", ns, "qdisc", "replace", "dev", "eth0", *tbf],
    ]


def link_state_command(spec: NetSpec, k: int, up: bool) -> list[str]:
    """Cut (or restore) node k's link: the host end of its veth, down or up."""
    return ["ip", "link", "set", spec.host_veth(k), "up" if up else "down"]


SLURMD_SCRIPT = (
    'hostname "$1" && mount -t tmpfs -o mode=0755,size=64m hvdbench-pmix "$2" && '
    'exec "$3" -D -N "$1" -f "$4"'
)


def slurmd_command(spec: NetSpec, k: int, slurmd: str = "slurmd") -> list[str]:
    """``slurmd -N nodeK`` in the node's network namespace, in its own mount and UTS
    namespaces: the hostname is the node's, and the PMIx client directory is a tmpfs of its
    own (the nodes share one file system, and PMIx clients of two nodes would collide)."""
    return [
        "nsenter",
        f"--net=/run/netns/{spec.node(k)}",
        "unshare",
        "--mount",
        "--uts",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        SLURMD_SCRIPT,
        "slurmd",
        spec.node(k),
        str(spec.root / "pmixcli"),
        slurmd,
        str(spec.conf),
    ]


def exec_command(pid: int, argv: Sequence[str]) -> list[str]:
    """Run ``argv`` on a node: in the namespaces (net, UTS, mount) of its slurmd ``pid``."""
    return ["nsenter", f"--target={pid}", "--net", "--uts", "--mount", "--", *argv]


def hosts_lines(spec: NetSpec) -> list[str]:
    tag = hosts_tag(spec.name)
    return [f"{spec.address(k)}\t{spec.node(k)}\t{tag}" for k in range(1, spec.nodes + 1)]


def hosts_tag(name: str) -> str:
    return f"# hvdbench-netcluster:{name}"


def slurm_conf(spec: NetSpec, host: str, ctld_port: int, slurmd_port: int) -> str:
    """slurm.conf: slurmctld on the host at the bridge's address, one node per namespace.
    ``SlurmdTimeout`` is short, so that a job on a cut node ends as ``NODE_FAIL`` soon."""
    return slurm_conf_text.render(
        name=spec.name,
        root=spec.root,
        controller=(host, spec.bridge_address),
        ctld_port=ctld_port,
        slurmd_port=slurmd_port,
        munge_socket=spec.root / "munge" / "munge.sock",
        nodes=[
            slurm_conf_text.Node(spec.node(k), spec.address(k), spec.cpus, 2048)
            for k in range(1, spec.nodes + 1)
        ],
        partition="net",
        slurmd_timeout_s=20,
        message_timeout_s=10,
    )


def mpi_conf(spec: NetSpec) -> str:
    return f"PMIxCliTmpDirBase={spec.root / 'pmixcli'}\n"


# ---------------------------------------------------------------------------------------
# Running things


def _run(cmd: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
    try:
        out = subprocess.run(
            [slurm_daemons.tool(cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError:
        raise NetClusterError(f"{cmd[0]} not found (iproute2, util-linux, Slurm)") from None
    if check and out.returncode != 0:
        raise NetClusterError(f"`{' '.join(cmd)}` failed: {out.stderr.strip()}")
    return out.stdout


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


def _subnet_users(spec: NetSpec) -> list[str]:
    """Interfaces other than our bridge that hold an address in the cluster's subnet."""
    users = []
    for line in _run(["ip", "-o", "-4", "addr", "show"]).splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[3].startswith(spec.subnet + ".") and parts[1] != spec.bridge:
            users.append(parts[1])
    return users


def ensure_network(spec: NetSpec) -> None:
    """Make what is missing of the bridge, namespaces and veths; set the rate limits."""
    if not _link_exists(spec.bridge):
        users = _subnet_users(spec)
        if users:
            raise NetClusterError(
                f"--subnet: {spec.subnet}.0/24 is already used by {', '.join(users)}; choose "
                "another subnet (or another --name for a second cluster)"
            )
        for cmd in bridge_commands(spec):
            _run(cmd)
    for k in range(1, spec.nodes + 1):
        if not (_netns_exists(spec.node(k)) and _link_exists(spec.host_veth(k))):
            if _netns_exists(spec.node(k)):
                _run(["ip", "netns", "del", spec.node(k)])
            for cmd in node_link_commands(spec, k):
                _run(cmd)
        _run(link_state_command(spec, k, up=True))
        for cmd in rate_commands(spec, k):
            _run(cmd, check=bool(spec.rate))


def write_hosts(spec: NetSpec, hosts_file: Path = HOSTS_FILE) -> None:
    """Our tagged lines replace any previous ones; other lines are kept as they were."""
    text = hosts_file.read_text() if hosts_file.exists() else ""
    kept = [ln for ln in text.splitlines() if not ln.endswith(hosts_tag(spec.name))]
    new = "\n".join([*kept, *hosts_lines(spec)]) + "\n"
    if new != text:
        with open(hosts_file, "w") as f:  # in place: /etc/hosts may be a bind mount
            f.write(new)


def remove_hosts(name: str, hosts_file: Path = HOSTS_FILE) -> None:
    if not hosts_file.exists():
        return
    text = hosts_file.read_text()
    kept = [ln for ln in text.splitlines() if not ln.endswith(hosts_tag(name))]
    new = "\n".join(kept) + "\n"
    if new != text:
        with open(hosts_file, "w") as f:
            f.write(new)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


class NetCluster:
    """Build, inspect and tear down the cluster described by a :class:`NetSpec`."""

    def __init__(self, spec: NetSpec) -> None:
        spec.validate()
        self.spec = spec
        self.state_file = spec.root / "state.json"

    # -- state ---------------------------------------------------------------------------
    def load_state(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict[str, object]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_file)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        out = dict(os.environ if base is None else base)
        out["SLURM_CONF"] = str(self.spec.conf)
        return out

    def _alive(self, pid: object) -> bool:
        """The recorded pid still runs one of our daemons (its command line names our root)."""
        if not isinstance(pid, int) or pid <= 0:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return (str(self.spec.root) + "/").encode() in cmdline

    def _spawn(self, name: str, cmd: list[str]) -> int:
        log = open(self.spec.root / f"{name}.out", "ab")  # noqa: SIM115 - owned by the daemon
        p = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            start_new_session=True,
        )
        log.close()
        return p.pid

    # -- build ---------------------------------------------------------------------------
    def up(self, timeout: float = 60) -> None:
        """Build what is missing, start what is not running, wait until every node is idle."""
        spec, root = self.spec, self.spec.root
        state = self.load_state()
        if state.get("nodes") not in (None, spec.nodes):
            raise NetClusterError(
                f"cluster {spec.name} is up with {state['nodes']} nodes; `down` it first to "
                f"change to {spec.nodes}"
            )
        ensure_network(spec)
        write_hosts(spec)
        for d in ("munge", "ctld", "pmixcli"):
            (root / d).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o755)
        key = root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        if not spec.conf.exists():
            (root / "plugstack.conf").write_text("")
            (root / "mpi.conf").write_text(mpi_conf(spec))
            spec.conf.write_text(slurm_conf(spec, socket.gethostname(), free_port(), free_port()))
        state.update(
            {"spec": asdict(spec), "nodes": spec.nodes, "conf": str(spec.conf), "rate": spec.rate}
        )
        pids = dict(state.get("pids", {}))  # type: ignore[call-overload]
        if not self._alive(pids.get("munged")):
            m = root / "munge"
            pids["munged"] = self._spawn("munged", slurm_daemons.munged_command(m, key))
            self._wait(lambda: (m / "munge.sock").exists(), timeout, "munged's socket")
        if not self._alive(pids.get("slurmctld")):
            pids["slurmctld"] = self._spawn("slurmctld", slurm_daemons.slurmctld_command(spec.conf))
            self._wait(self._ctld_up, timeout, "slurmctld answering")
        for k in range(1, spec.nodes + 1):
            name = spec.node(k)
            if not self._alive(pids.get(name)):
                pids[name] = self._spawn(
                    name, slurmd_command(spec, k, slurm_daemons.tool("slurmd"))
                )
        state["pids"] = pids
        self._save_state(state)
        self._wait(self._all_idle, timeout, "every node idle")

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        if not slurm_daemons.wait_until(ready, timeout):
            raise NetClusterError(f"timed out waiting for {what}:\n{self.logs()}")

    def scontrol(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return slurm_daemons.scontrol(self.env(), *args, timeout=timeout)

    def _ctld_up(self) -> bool:
        return self.scontrol("ping").returncode == 0

    def node_states(self) -> dict[str, str]:
        out = self.scontrol("show", "node", "-o").stdout
        states = {}
        for line in out.splitlines():
            m, s = re.search(r"NodeName=(\S+)", line), re.search(r"State=(\S+)", line)
            if m and s:
                states[m.group(1)] = s.group(1)
        return states

    def _all_idle(self) -> bool:
        states = self.node_states()
        return all(states.get(n, "").startswith("IDLE") for n in self.spec.node_names)

    def logs(self, tail: int = 20) -> str:
        parts = []
        root = self.spec.root
        for f in sorted(root.glob("*.log")) + sorted(root.glob("*.out")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- use -----------------------------------------------------------------------------
    def slurmd_pid(self, node: str) -> int:
        k = self.spec.index_of(node)
        pids = dict(self.load_state().get("pids", {}))  # type: ignore[call-overload]
        pid = pids.get(self.spec.node(k))
        if not self._alive(pid):
            raise NetClusterError(f"node {self.spec.node(k)} is not running (`up` first)")
        # The recorded pid is nsenter's, which execs unshare, then sh, then slurmd: the
        # same process throughout, in the node's namespaces.
        return int(pid)  # type: ignore[arg-type]

    def exec_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        return exec_command(self.slurmd_pid(node), argv)

    def set_link(self, node: str, up: bool) -> None:
        """Cut or restore a node's link. After a restore, a node that slurmctld set DOWN
        while it was cut is resumed, as an administrator would."""
        k = self.spec.index_of(node)
        _run(link_state_command(self.spec, k, up))
        if up and self.spec.conf.exists():
            state = self.node_states().get(self.spec.node(k), "")
            if state.startswith("DOWN"):
                self.scontrol("update", f"nodename={self.spec.node(k)}", "state=resume")

    # -- teardown ------------------------------------------------------------------------
    def _namespace_inodes(self) -> set[int]:
        inodes = set()
        for k in range(1, MAX_NODES + 1):
            p = Path(f"/run/netns/{self.spec.node(k)}")
            try:
                inodes.add(p.stat().st_ino)
            except OSError:
                pass
        return inodes

    def our_processes(self) -> list[int]:
        """Every process in one of our namespaces, or started with our SLURM_CONF (sbatch,
        srun, steps), or one of our daemons; never this process."""
        inodes = self._namespace_inodes()
        marker = f"SLURM_CONF={self.spec.conf}".encode()
        root = (str(self.spec.root) + "/").encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                ns = os.stat(f"/proc/{entry}/ns/net").st_ino
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if ns in inodes or marker in environ or root in cmdline:
                pids.append(int(entry))
        return pids

    def down(self) -> list[str]:
        """Remove everything this cluster made; return what was removed."""
        spec = self.spec
        removed: list[str] = []
        state = self.load_state()
        pids = dict(state.get("pids", {}))  # type: ignore[call-overload]
        # slurmd first (it ends its steps), then slurmctld and munged, politely.
        for name in [*spec.node_names, "slurmctld", "munged"]:
            pid = pids.get(name)
            if self._alive(pid):
                _signal_group(int(pid), signal.SIGTERM)  # type: ignore[arg-type]
                removed.append(f"process {name} ({pid})")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(self._alive(pids.get(n)) for n in pids):
            time.sleep(0.2)
        for _ in range(3):
            left = self.our_processes()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            removed.append(f"{len(left)} process(es) killed")
            time.sleep(0.5)
        for k in range(1, MAX_NODES + 1):
            if _netns_exists(spec.node(k)):
                _run(["ip", "netns", "del", spec.node(k)], check=False)
                removed.append(f"netns {spec.node(k)}")
            if _link_exists(spec.host_veth(k)):
                _run(["ip", "link", "del", spec.host_veth(k)], check=False)
        if _link_exists(spec.bridge):
            _run(["ip", "link", "del", spec.bridge], check=False)
            removed.append(f"bridge {spec.bridge}")
        remove_hosts(spec.name)
        if spec.root.exists():
            shutil.rmtree(spec.root, ignore_errors=True)
            removed.append(f"state {spec.root}")
        return removed

    def leftovers(self) -> list[str]:
        """What of this cluster still exists (empty after a clean ``down``)."""
        spec = self.spec
        out = [f"process {p}" for p in self.our_processes()]
        out += [
            f"netns {spec.node(k)}" for k in range(1, MAX_NODES + 1) if _netns_exists(spec.node(k))
        ]
        out += [f"link {n}" for n in [spec.bridge] + [spec.host_veth(k) for k in range(1, MAX_NODES + 1)] if _link_exists(n)]  # fmt: skip
        if HOSTS_FILE.exists() and hosts_tag(spec.name) in HOSTS_FILE.read_text():
            out.append(f"{HOSTS_FILE} lines")
        if spec.root.exists():
            out.append(f"state {spec.root}")
        return out


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hvdbench.testbed.netcluster",
        description="A multi-node Slurm cluster of network namespaces on this machine (root).",
    )
    p.add_argument("--name", default=NetSpec.name, help="prefix of every name (default hvdnet)")
    p.add_argument("--state-root", default=STATE_ROOT, help="parent of the state directory")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build (idempotent) and print `export SLURM_CONF=...`")
    up.add_argument("--nodes", type=int, default=NetSpec.nodes, help=f"1..{MAX_NODES}")
    up.add_argument("--subnet", default=NetSpec.subnet, help="three octets (default 10.213.0)")
    up.add_argument("--rate", default="", help="per-link tc rate, e.g. 1gbit (default: none)")
    up.add_argument("--burst", default=NetSpec.burst, help="tbf burst, >= 64kb")
    up.add_argument("--cpus", type=int, default=NetSpec.cpus, help="CPUs per node for Slurm")
    sub.add_parser("down", help="remove everything the cluster made")
    sub.add_parser("status", help="nodes, addresses, daemons, what is left")
    ex = sub.add_parser("exec", help="run a command on a node: exec NODE -- CMD ...")
    ex.add_argument("node")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    for name in ("cut", "restore"):
        c = sub.add_parser(name, help=f"{name} a node's link (ip link set ... down/up)")
        c.add_argument("node")
    return p


def spec_from_state(name: str, state_root: str) -> NetSpec:
    """The spec a running cluster was built with (defaults when there is none)."""
    path = Path(state_root) / name / "state.json"
    try:
        fields = json.loads(path.read_text())["spec"]
        return NetSpec(**fields)
    except (OSError, ValueError, KeyError, TypeError):
        return NetSpec(name=name, state_root=state_root)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if os.geteuid() != 0:
            raise NetClusterError("network namespaces and the Slurm daemons need root")
        if args.command == "up":
            spec = NetSpec(
                name=args.name,
                nodes=args.nodes,
                subnet=args.subnet,
                rate=args.rate,
                burst=args.burst,
                cpus=args.cpus,
                state_root=args.state_root,
            )
            c = NetCluster(spec)
            c.up()
            for k in range(1, spec.nodes + 1):
                print(f"# {spec.node(k)} {spec.address(k)}", file=sys.stderr)
            print(f"export SLURM_CONF={spec.conf}")
            return 0
        c = NetCluster(spec_from_state(args.name, args.state_root))
        if args.command == "down":
            for line in c.down():
                print(f"removed {line}")
        elif args.command == "status":
            state = c.load_state()
            print(json.dumps({"spec": state.get("spec"), "pids": state.get("pids")}, indent=1))
            if c.spec.conf.exists():
                print(json.dumps(c.node_states(), indent=1))
            print("present:", ", ".join(c.leftovers()) or "nothing")
        elif args.command == "exec":
            cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not cmd:
                raise NetClusterError(
                    "exec: give a command after the node, e.g. exec hvdnet1 -- ip addr"
                )
            return subprocess.call(c.exec_argv(args.node, cmd), env=c.env())
        elif args.command in ("cut", "restore"):
            c.set_link(args.node, up=args.command == "restore")
        return 0
    except NetClusterError as e:
        print(f"netcluster: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
