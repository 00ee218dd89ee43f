"""Starting and asking the munge and Slurm daemons of a private test cluster.

Both of hvdbench's own Slurm clusters use this: the one node on loopback of the Slurm test
tier (``tests/slurm/cluster.py``) and the network-namespace cluster of
:mod:`hvdbench.testbed.netcluster`. Each runs munged and slurmctld as root from one state
directory and polls them until they answer; how each spawns and tracks its processes is its
own. The command lines are built by pure functions, as the launchers' are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def find(name: str) -> str | None:
    """The path of a Slurm or munge program: on ``PATH``, else in an sbin directory (where
    Debian puts the daemons, and which root's ``PATH`` may lack); ``None`` if neither."""
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN_DIRS:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def tool(name: str) -> str:
    """:func:`find`'s path, or the bare name (so that running it fails as not found)."""
    return find(name) or name


def munged_command(munge_dir: Path, key: Path) -> list[str]:
    """munged in the foreground with its socket (``munge.sock``), log, pid and seed files
    in ``munge_dir``, and ``key`` as its key."""
    return [
        tool("munged"),
        "--foreground",
        "--force",
        f"--socket={munge_dir / 'munge.sock'}",
        f"--key-file={key}",
        f"--log-file={munge_dir / 'munged.log'}",
        f"--pid-file={munge_dir / 'munged.pid'}",
        f"--seed-file={munge_dir / 'munged.seed'}",
    ]


def slurmctld_command(conf: Path) -> list[str]:
    """slurmctld in the foreground (``-D``), ignoring saved state (``-i``), on ``conf``."""
    return [tool("slurmctld"), "-D", "-i", "-f", str(conf)]


def scontrol(
    env: Mapping[str, str], *args: str, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """``scontrol args`` against the cluster that ``env``'s ``SLURM_CONF`` names."""
    return subprocess.run(
        [tool("scontrol"), *args], capture_output=True, text=True, env=dict(env), timeout=timeout
    )


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    *,
    check: Callable[[], None] | None = None,
    poll: float = 0.3,
) -> bool:
    """Poll ``ready`` every ``poll`` seconds for at most ``timeout``; True once it is.
    ``check``, called before each poll, may raise (a daemon that died, say) to stop early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        if ready():
            return True
        time.sleep(poll)
    return False
