"""The JSON result record: what a run measured and everything needed to reproduce it.

Records are written atomically (temporary file in the same directory, fsync, rename, fsync
of the directory), so a crash at any moment leaves either no file or a whole one. A record
has a unique name and is never appended to; only the run that created it may replace it
with a newer whole version.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RECORD_SCHEMA_VERSION = 1
ENV_PREFIXES = ("HOROVOD_", "OMPI_", "NCCL_", "TF_", "SLURM_", "PMIX_", "HVDBENCH_")


def captured_env(env: Mapping[str, str]) -> dict[str, str]:
    """The launcher- and library-relevant environment, sorted."""
    return {k: env[k] for k in sorted(env) if k.startswith(ENV_PREFIXES)}


def git_sha(path: str | os.PathLike[str] | None = None) -> str | None:
    """The commit of the hvdbench checkout, or None when not run from one."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def mpi_version() -> str | None:
    """Open MPI's version from ``mpirun --version``, without initialising MPI here."""
    try:
        out = subprocess.run(["mpirun", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.stdout.strip().splitlines()[:1]
    return first[0] if first else None


def record_name(mode: str, model: str, num_ranks: int, when: float | None = None) -> str:
    """A unique, sortable file name: ``20261123T201500-horovod-resnet20-n2-1a2b3c4d.json``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when if when is not None else time.time()))
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{mode}-{model}")
    return f"{stamp}-{safe}-n{num_ranks}-{uuid.uuid4().hex[:8]}.json"


def write_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON to ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


# The instruction-set extensions that decide TensorFlow's CPU kernels' speed, as cpuinfo
# names them: two VMs whose model name reads "AMD EPYC" differed 3.7x in speed per core.
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_fields(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's ``key: value`` fields of ``cpuinfo`` (empty if unreadable)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's model name, as ``lscpu`` shows it ("Model name")."""
    return cpu_fields(cpuinfo).get("model name") or platform.processor() or None


def cpu_identity(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """What tells two CPUs with the same model name apart: vendor, family, model and
    stepping (a VM often shows only "AMD EPYC"), the ISA extensions of :data:`ISA_FLAGS`
    present, and the kernel's BogoMIPS."""
    f = cpu_fields(cpuinfo)
    ident = " ".join(
        f"{label} {f[key]}" if label else f[key]
        for label, key in (
            ("", "vendor_id"),
            ("family", "cpu family"),
            ("model", "model"),
            ("stepping", "stepping"),
        )
        if f.get(key)
    )
    flags = set(f.get("flags", "").split())
    bogomips = f.get("bogomips")
    return {
        "cpu_id": ident or None,
        "cpu_isa": [x for x in ISA_FLAGS if x in flags],
        "bogomips": float(bogomips) if bogomips else None,
    }


def hardware(gpus: list[str] | None = None, cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """The chief's node: CPU model and identity, logical CPUs (all, and this process's),
    memory, GPUs. Every performance figure names the machine it was taken on."""
    return {
        "cpu_model": cpu_model(cpuinfo),
        **cpu_identity(cpuinfo),
        "logical_cpus": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "gpus": list(gpus or []),
        "machine": platform.machine(),
    }


def installed_version(package: str) -> str | None:
    """An installed distribution's version, from its metadata (no import), or None."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def command_line() -> list[str]:
    return [sys.executable, *sys.argv]
