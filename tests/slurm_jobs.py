"""Waiting for Slurm jobs, the same on the one-node cluster (tests/slurm) and on the
namespace cluster (tests/multinode): both clusters offer ``scontrol``, ``env`` and ``logs``."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from typing import Any, Protocol

import pytest

FINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE",
}  # fmt: skip


class Cluster(Protocol):
    def scontrol(self, *args: str) -> Any: ...
    def env(self) -> Mapping[str, str]: ...
    def logs(self) -> str: ...


def job_fields(cluster: Cluster, job: str) -> dict[str, str]:
    """`scontrol show job -o`, as a dict of its first value for each key."""
    out = cluster.scontrol("show", "job", job, "-o").stdout
    fields: dict[str, str] = {}
    for token in out.split():
        if "=" in token:
            k, v = token.split("=", 1)
            fields.setdefault(k, v)
    return fields


def wait_for_job(cluster: Cluster, job: str, timeout: float, poll_s: float) -> dict[str, str]:
    """Poll until the job reaches a final state; cancel it and fail on timeout."""
    deadline = time.monotonic() + timeout
    fields: dict[str, str] = {}
    while time.monotonic() < deadline:
        fields = job_fields(cluster, job)
        if fields.get("JobState") in FINAL_STATES:
            return fields
        time.sleep(poll_s)
    subprocess.run(["scancel", job], env=cluster.env(), capture_output=True, timeout=20)
    pytest.fail(f"job {job} did not finish within {timeout:g} s: {fields}\n{cluster.logs()}")
