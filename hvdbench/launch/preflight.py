"""What a run needs from this machine, checked before the slow part starts.

The config layer checks keys and values; this module checks them against the machine,
still without TensorFlow: that every directory the run will write can be created and
written, and that the input batch fits in the node's memory. A failure is one line
naming the key, with exit code 2, and nothing is left behind (a probe directory is
created and removed at once; the run's own directories are not created here).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hvdbench import tfcompat
from hvdbench.config import MODE_NAMES, Config
from hvdbench.errors import UsageError
from hvdbench.models.specs import MODEL_SPECS

FLOAT32_BYTES = 4


def written_dirs(cfg: Config) -> Iterator[tuple[str, str]]:
    """(key, directory) of everything a run writes: the record, checkpoints, summaries,
    traces, and the parent directories of Horovod's timeline and autotune log."""
    yield "output.dir", cfg.output.dir or "."
    if cfg.checkpoint.dir:
        yield "checkpoint.dir", cfg.checkpoint.dir
    if cfg.summary.dir:
        yield "summary.dir", cfg.summary.dir
    if cfg.trace.steps:
        if cfg.trace.dir:
            yield "trace.dir", cfg.trace.dir
        elif not cfg.summary.dir:
            yield "trace.dir", os.path.join(cfg.output.dir or ".", "trace")
    if cfg.horovod.timeline:
        yield "horovod.timeline", os.path.dirname(os.path.abspath(cfg.horovod.timeline))
    if cfg.horovod.autotune and cfg.horovod.autotune_log:
        yield "horovod.autotune_log", os.path.dirname(os.path.abspath(cfg.horovod.autotune_log))


def check_writable(key: str, directory: str) -> None:
    """``directory`` exists and takes new files, or can be created: a probe directory is
    made (and removed) in it or in its nearest existing ancestor."""
    path = Path(directory).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{key}: '{directory}' exists and is not a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{key}: cannot create '{directory}': {ancestor} is not a directory")
    try:
        probe = tempfile.mkdtemp(prefix=".hvdbench-probe-", dir=ancestor)
    except OSError as e:
        where = "in it" if ancestor == path else f"in {ancestor}"
        what = "write to" if ancestor == path else "create"
        raise UsageError(f"{key}: cannot {what} '{directory}' ({e.strerror} {where})") from None
    os.rmdir(probe)


def check_directories(cfg: Config) -> None:
    for key, directory in written_dirs(cfg):
        check_writable(key, directory)


def node_memory_bytes() -> int:
    """Physical memory of this node."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(cfg: Config, ranks_on_node: int, memory: int | None = None) -> None:
    """Refuse a per-device batch whose input tensor alone cannot fit in the node's memory:
    a lower bound (activations, weights and TensorFlow come on top), so nothing that could
    run is refused, and what TensorFlow would die on with ResourceExhaustedError is."""

    spec = MODEL_SPECS[cfg.model.name]
    size = cfg.model.image_size or spec.image_size
    batch = cfg.train.per_device_batch_size
    devices = cfg.mode.num_devices if cfg.mode.name in ("replicated", "independent") else 1
    per_rank = batch * devices * size * size * spec.channels * FLOAT32_BYTES
    need = per_rank * max(1, ranks_on_node)
    have = node_memory_bytes() if memory is None else memory
    if need <= have:
        return
    key = (
        "model.image_size"
        if size * size * spec.channels * FLOAT32_BYTES * max(1, ranks_on_node) * devices > have
        else "train.per_device_batch_size"
    )
    shape = f"{size}x{size}x{spec.channels}"
    ranks = f" x {ranks_on_node} ranks on this node" if ranks_on_node > 1 else ""
    per_device = f" x {devices} devices" if devices > 1 else ""
    raise UsageError(
        f"{key}: the input batch alone needs {batch} images{per_device} x {shape} x "
        f"{FLOAT32_BYTES} bytes{ranks} = {_human(need)}, more than this node's "
        f"{_human(have)} of memory; use a smaller train.per_device_batch_size or "
        "model.image_size"
    )


def check_libraries(cfg: Config) -> None:
    """The mode's libraries are installed: Horovod for ``horovod`` (a venv built for a
    TensorFlow that Horovod does not build against has none)."""
    if cfg.mode.name == "horovod":
        tfcompat.require_horovod(tuple(m for m in MODE_NAMES if m != "horovod"))
