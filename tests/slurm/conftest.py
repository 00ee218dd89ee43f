"""The Slurm tier's cluster: one real local Slurm (munged, slurmctld, slurmd) per session.

Skipped, with the reason, when the Slurm packages are missing (`make install-slurm`) or
when not running as root (the daemons run as root with everything under a temp dir).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, base_env
from tests.slurm.cluster import LocalSlurm, missing_binaries

FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


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


def job_fields(cluster: LocalSlurm, job: str) -> dict[str, str]:
    out = cluster.scontrol("show", "job", job, "-o").stdout
    fields: dict[str, str] = {}
    for token in out.split():
        if "=" in token:
            k, v = token.split("=", 1)
            fields.setdefault(k, v)
    return fields


def wait_for_job(cluster: LocalSlurm, job: str, timeout: float) -> dict[str, str]:
    """Poll until the job reaches a final state; cancel it and fail on timeout."""
    deadline = time.monotonic() + timeout
    fields: dict[str, str] = {}
    while time.monotonic() < deadline:
        fields = job_fields(cluster, job)
        if fields.get("JobState") in FINAL_STATES:
            return fields
        time.sleep(2)
    subprocess.run(["scancel", job], env=cluster.env(), capture_output=True, timeout=20)
    pytest.fail(f"job {job} did not finish within {timeout:g} s: {fields}\n{cluster.logs()}")


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
