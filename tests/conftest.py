"""Shared test helpers: every process a test starts runs in its own process group, is
bounded in time, and is killed with its whole group whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

# Under CI=true, or HVDBENCH_NO_SKIP=1 (the Makefile's tiers), a skipped test fails.
from tests.no_skip import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a test's child: this venv first on PATH, the repo importable,
    Open MPI allowed to run as root, and no launcher variables inherited from outside."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OMPI_", "PMIX_", "HOROVOD_", "SLURM_", "HVDBENCH_"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra or {})
    return env


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Result:
    """Run ``cmd`` in a new process group; kill the group on return, timeout or error."""
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=dict(env) if env is not None else base_env(),
        cwd=cwd,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, err = proc.communicate()
    finally:
        _kill_group(proc.pid)
    return Result(proc.returncode, out, err, timed_out)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def hvdbench(
    *args: str, timeout: float = 120, env: Mapping[str, str] | None = None, cwd=None
) -> Result:
    """Run ``python -m hvdbench ARGS`` as a user would."""
    return run(
        [sys.executable, "-m", "hvdbench", *args], timeout=timeout, env=env or base_env(), cwd=cwd
    )


@pytest.fixture
def repo() -> Path:
    return REPO
