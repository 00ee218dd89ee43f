"""The install commands the Makefile runs, CPU and GPU, as `make -n` prints them.

The GPU path cannot run here (no GPU, no CUDA); these tests pin down what it would run.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def dry_run(*args: str) -> list[str]:
    out = subprocess.run(
        ["make", "-n", "-B", "install", "VENV=/nonexistent/venv", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def line_with(lines: list[str], needle: str) -> str:
    found = [line for line in lines if needle in line]
    assert found, f"no line with {needle!r} in:\n" + "\n".join(lines)
    return found[0]


def test_cpu_build():
    lines = dry_run()
    deps = line_with(lines, "tensorflow")
    assert '"tensorflow-cpu==2.14.1"' in deps and "mpi4py" in deps
    hvd = line_with(lines, "horovod==0.28.1")
    for flag in (
        "HOROVOD_WITH_TENSORFLOW=1",
        "HOROVOD_WITH_MPI=1",
        "HOROVOD_WITH_GLOO=1",
        "HOROVOD_WITHOUT_PYTORCH=1",
        "HOROVOD_WITHOUT_MXNET=1",
        "--no-build-isolation",
    ):
        assert flag in hvd
    assert "NCCL" not in hvd
    check = line_with(lines, "check-build")
    assert check.endswith("--require TensorFlow,MPI,Gloo")


def test_gpu_build_uses_nccl_and_bypasses_the_wheel_cache():
    lines = dry_run("GPU=1", "CUDA_HOME=/usr/local/cuda", "NCCL_HOME=/opt/nccl")
    assert '"tensorflow[and-cuda]==2.14.1"' in line_with(lines, "tensorflow")
    hvd = line_with(lines, "horovod==0.28.1")
    for flag in (
        "HOROVOD_GPU_OPERATIONS=NCCL",
        "HOROVOD_CUDA_HOME=/usr/local/cuda",
        "HOROVOD_NCCL_HOME=/opt/nccl",
        "--no-cache-dir",
        "--no-build-isolation",
        "HOROVOD_WITH_TENSORFLOW=1",
        "HOROVOD_WITH_MPI=1",
    ):
        assert flag in hvd
    assert line_with(lines, "check-build").endswith("--require TensorFlow,MPI,Gloo,NCCL")


def test_gpu_build_without_explicit_homes_lets_horovod_find_them():
    hvd = line_with(dry_run("GPU=1"), "horovod==0.28.1")
    assert "HOROVOD_CUDA_HOME" not in hvd and "HOROVOD_NCCL_HOME" not in hvd
