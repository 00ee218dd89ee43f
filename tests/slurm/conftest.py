"""The Slurm tier's cluster: one real local Slurm (munged, slurmctld, slurmd) per session.

Skipped, with the reason, when the Slurm packages are missing (`make install-slurm`) or
when not running as root (the daemons run as root with everything under a temp dir).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import slurm_jobs
from tests.conftest import REPO, base_env
from tests.slurm.cluster import LocalSlurm, missing_binaries


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalSlurm]:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm not installed (missing {', '.join(missing)}): make install-slurm")
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster runs its daemons as root")
    cluster = LocalSlurm(cpus=8)
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cancel_all(cluster)
        cluster.stop()


def cancel_all(cluster: LocalSlurm) -> None:
    """Cancel every job left and wait (bounded) until none runs, so nothing outlives us."""
    env = cluster.env()
    subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=20)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=20
        )
        if out.returncode != 0 or not out.stdout.strip():
            return
        time.sleep(1)


def slurm_env(cluster: LocalSlurm) -> dict[str, str]:
    """What a user's shell has: the venv's Python and tools, the repo importable, and the
    cluster's config. sbatch exports it to the job."""
    env = base_env({"SLURM_CONF": str(cluster.conf), "HVDBENCH_PYTHON": sys.executable})
    return env


# Each tier's poll interval: the namespace cluster's jobs are short and timed.
wait_for_job = functools.partial(slurm_jobs.wait_for_job, poll_s=2)


def wait_for_text(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(1)
    return False


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
