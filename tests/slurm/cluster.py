"""A real one-node Slurm cluster on this machine, for the Slurm test tier.

munged, slurmctld and slurmd run as root in the foreground, each in its own process group,
with every file (key, config, state, spool, logs, sockets) under one temporary directory and
free loopback ports, so that the cluster neither needs nor touches /etc/slurm, /etc/munge or
another cluster on the machine. Clients find it through ``SLURM_CONF``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from hvdbench.testbed import slurm_conf, slurm_daemons

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo")


def missing_binaries() -> list[str]:
    """The Slurm and munge programs that are not installed (``make install-slurm``)."""
    return [b for b in SLURM_BINARIES if not slurm_daemons.find(b)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalSlurm:
    """Start and stop the one-node cluster; ``env()`` is what clients need to reach it."""

    def __init__(self, cpus: int = 8, node: str | None = None) -> None:
        self.cpus = cpus
        self.node = node or socket.gethostname()
        self.root = Path(tempfile.mkdtemp(prefix="hvdslurm-"))
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.sock"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        out = dict(os.environ if base is None else base)
        out["SLURM_CONF"] = str(self.conf)
        return out

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 - owned by the process
        self.procs[name] = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            start_new_session=True,
        )
        log.close()

    def start(self, timeout: float = 60) -> None:
        for d in ("munge", "ctld"):
            (self.root / d).mkdir(mode=0o700)
        os.chmod(self.root, 0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        (self.root / "plugstack.conf").write_text("")
        self.conf.write_text(
            slurm_conf.render(
                name="hvdbenchtest",
                root=self.root,
                controller=(self.node, "127.0.0.1"),
                ctld_port=free_port(),
                slurmd_port=free_port(),
                munge_socket=self.munge_socket,
                nodes=[slurm_conf.Node(self.node, "127.0.0.1", self.cpus, 1024)],
                partition="debug",
                slurmd_timeout_s=60,
                message_timeout_s=20,
                task_plugin="task/affinity",  # srun --cpu-bind and --cpus-per-task bind
            )
        )
        m = self.root / "munge"
        self._spawn("munged", slurm_daemons.munged_command(m, key))
        self._wait_for(lambda: self.munge_socket.exists(), timeout, "munged socket")
        self._spawn("slurmctld", slurm_daemons.slurmctld_command(self.conf))
        self._wait_for(self._ctld_up, timeout, "slurmctld answering")
        self._spawn(
            "slurmd", [slurm_daemons.tool("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)]
        )
        self._wait_for(self._node_idle, timeout, f"node {self.node} idle")

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.logs()}")

    def _wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        if not slurm_daemons.wait_until(ready, timeout, check=self._check_alive):
            raise RuntimeError(f"local Slurm: timed out waiting for {what}:\n{self.logs()}")

    def scontrol(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return slurm_daemons.scontrol(self.env(), *args, timeout=timeout)

    def _ctld_up(self) -> bool:
        return self.scontrol("ping").returncode == 0

    def _node_idle(self) -> bool:
        out = self.scontrol("show", "node", self.node, "-o").stdout
        return "State=IDLE" in out

    def logs(self, tail: int = 30) -> str:
        parts = []
        for f in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def leftover_pids(self) -> list[int]:
        """Processes started through this cluster (slurmstepd, job tasks): they inherit
        ``SLURM_CONF`` pointing at our config, which nothing else on the machine has."""
        marker = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in env:
                pids.append(int(entry))
        return pids

    def stop(self) -> None:
        """Stop the daemons (slurmd, slurmctld, munged) by process group, kill by pid any
        step or task they left, then remove the state."""
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None:
                continue
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                if p.poll() is not None:
                    break
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    pass
        for pid in self.leftover_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":  # manual exploration: start, print the env, wait for Ctrl-C
    c = LocalSlurm()
    try:
        c.start()
        print(f"export SLURM_CONF={c.conf}", flush=True)
        signal.pause()
    finally:
        c.stop()
