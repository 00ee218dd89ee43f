"""The multi-node tier's cluster: network namespaces on a bridge, one slurmd per namespace.

One cluster per session, always torn down (even when a test fails), and the teardown itself
checks that nothing of it is left. Skipped, with the reason, without root or the tools.
It runs beside the one-node Slurm tier's cluster and beside a developer's own netcluster:
its own name, its own free /24, its own munge and Slurm state under /run/hvdbench-net.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvdbench.testbed.netcluster import NetCluster, NetClusterError, NetSpec
from tests import slurm_jobs
from tests.conftest import base_env

TOOLS = ("ip", "tc", "nsenter", "unshare", "munged", "slurmctld", "slurmd", "sbatch", "scontrol")
CLUSTER_NAME = "hvdmt"


def missing_tools() -> list[str]:
    dirs = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin"
    return [t for t in TOOLS if not shutil.which(t, path=dirs)]


def free_subnet(prefix: str = "10.213", name: str = CLUSTER_NAME) -> str:
    """The first 10.213.X.0/24 no interface uses (our own bridge's counts as free)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         timeout=10).stdout  # fmt: skip
    used = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            used[parts[3].rsplit(".", 1)[0]] = parts[1]
    for x in range(0, 50):
        subnet = f"{prefix}.{x}"
        if subnet not in used or used[subnet] == f"{name}-br":
            return subnet
    raise RuntimeError(f"no free subnet under {prefix}")


def skip_unless_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and the Slurm daemons need root")
    missing = missing_tools()
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (iproute2, util-linux; make install-slurm)")


@pytest.fixture(scope="session")
def net_cluster() -> Iterator[NetCluster]:
    skip_unless_possible()
    spec = NetSpec(name=CLUSTER_NAME, nodes=2, subnet=free_subnet(), cpus=6)
    cluster = NetCluster(spec)
    cluster.down()  # what a killed earlier session may have left
    try:
        cluster.up(timeout=90)
        yield cluster
    finally:
        cluster.down()
        left = cluster.leftovers()
        assert not left, f"the multi-node cluster left: {left}"


def net_env(cluster: NetCluster) -> dict[str, str]:
    """A user's shell: the venv's Python and tools, the repo importable, the cluster's config."""
    return base_env({"SLURM_CONF": str(cluster.spec.conf), "HVDBENCH_PYTHON": sys.executable})


# Each tier's poll interval: the namespace cluster's jobs are short and timed.
wait_for_job = functools.partial(slurm_jobs.wait_for_job, poll_s=1)


def wait_for_text(path: Path, text: str, timeout: float) -> float | None:
    """Seconds until ``text`` appears in ``path``, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if path.exists() and text in path.read_text(errors="replace"):
            return time.monotonic() - start
        time.sleep(0.5)
    return None


__all__ = ["NetClusterError", "net_env", "wait_for_job", "wait_for_text"]
