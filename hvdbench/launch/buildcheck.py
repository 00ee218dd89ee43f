"""Read ``horovodrun --check-build``: which frameworks, controllers and operations are built."""

from __future__ import annotations

import re
import subprocess

from hvdbench.errors import UsageError
from hvdbench.launch.launcher import tool_path

REBUILD = {
    "TensorFlow": "HOROVOD_WITH_TENSORFLOW=1",
    "MPI": "HOROVOD_WITH_MPI=1",
    "Gloo": "HOROVOD_WITH_GLOO=1",
    "NCCL": "HOROVOD_GPU_OPERATIONS=NCCL (make install GPU=1)",
}


def parse_check_build(text: str) -> dict[str, bool]:
    """Map each listed feature to whether it is built (``[X]``).

    MPI and Gloo appear twice (controller and tensor operation); a feature counts as built
    only if every listing of it is ``[X]``.
    """
    built: dict[str, bool] = {}
    for mark, name in re.findall(r"\[([ X])\]\s+(\S+)", text):
        built[name] = built.get(name, True) and mark == "X"
    return built


def missing_features(built: dict[str, bool], required: list[str]) -> list[str]:
    return [r for r in required if not built.get(r, False)]


def rebuild_message(missing: list[str]) -> str:
    flags = " ".join(REBUILD.get(m, f"HOROVOD_WITH_{m.upper()}=1") for m in missing)
    return (
        f"Horovod was built without {', '.join(missing)}; reinstall it with {flags} "
        "(`make install` does: it rebuilds with pip --no-cache-dir --no-build-isolation)"
    )


def run_check_build(horovodrun: str | None = None) -> dict[str, bool]:
    """Run ``horovodrun --check-build`` and parse it."""

    exe = horovodrun or tool_path("horovodrun")
    try:
        out = subprocess.run([exe, "--check-build"], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise UsageError(
            f"'{exe}' not found: Horovod is not installed; run `make install`"
        ) from None
    if out.returncode != 0:
        raise UsageError(f"'{exe} --check-build' failed with exit code {out.returncode}")
    return parse_check_build(out.stdout)
