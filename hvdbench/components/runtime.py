"""Each rank's share of its node: cores, TensorFlow thread pools and the visible GPU.

``bind_cores`` must run before TensorFlow is imported: Linux affinity is per thread and
inherited at thread creation, so the thread pools have to be born inside the binding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hvdbench import tfcompat
from hvdbench.components.devices import visible_gpus
from hvdbench.config import Config
from hvdbench.errors import UsageError
from hvdbench.launch import cputopo
from hvdbench.launch.topology import Topology


def core_slice(cores: Sequence[int], local_rank: int, local_size: int) -> list[int]:
    """The ``local_rank``-th of ``local_size`` equal slices of ``cores``, each CPU id taken
    as a core of its own (:func:`hvdbench.launch.cputopo.core_share` slices by physical core).

    With fewer cores than ranks, ranks share cores round-robin (one core each).
    """
    cores = sorted(cores)
    if local_size <= 1:
        return list(cores)
    per = len(cores) // local_size
    if per == 0:
        return [cores[local_rank % len(cores)]]
    return cores[local_rank * per : (local_rank + 1) * per]


def bind(
    cfg: Config,
    topo: Topology,
    slot: tuple[int, int] | None = None,
    machine: cputopo.Machine | None = None,
) -> cputopo.Binding:
    """Bind this process to its share of the node, unless the launcher already bound it,
    and return its CPUs and who chose them (:func:`hvdbench.launch.cputopo.plan`).

    ``slot`` is (index, count) among the processes that split this node's cores: the local
    rank and size by default; a mode may say otherwise (:meth:`Mode.core_slot`), e.g. a ps
    task takes (0, 1), every core, and the workers beside it split the cores among them.
    ``runtime.bind_cores = true`` means "bind when nobody else did": a mask the launcher
    gave (a strict subset of the cgroup's CPUs) stands, and only the thread pools follow it.
    """
    index, count = slot if slot is not None else (topo.local_rank, topo.local_size)
    machine = machine if machine is not None else cputopo.read_machine()
    available = sorted(os.sched_getaffinity(0))
    planned = cputopo.plan(machine, available, index, count, cfg.runtime.bind_cores)
    if planned.how == cputopo.HVDBENCH:
        os.sched_setaffinity(0, planned.cpus)
    return cputopo.Binding(tuple(sorted(os.sched_getaffinity(0))), planned.how)


def bind_cores(cfg: Config, topo: Topology, slot: tuple[int, int] | None = None) -> list[int]:
    """:func:`bind`, returning only the CPUs this process has."""
    return list(bind(cfg, topo, slot).cpus)


def count_gpus(env: Mapping[str, str], root: Path | str = "/") -> int:
    """The GPUs this process would see, without importing TensorFlow: those listed in
    ``CUDA_VISIBLE_DEVICES`` when it is set, else the NVIDIA driver's devices."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and not d.startswith("-")])
    return len(list((Path(root) / "proc/driver/nvidia/gpus").glob("*")))


def gpu_index(topo: Topology, num_gpus: int) -> int | None:
    """The GPU a one-device-per-process rank takes: its local rank's, shared round-robin
    (:func:`visible_gpus`); None without GPUs."""
    keep = visible_gpus(num_gpus, topo.local_rank, None)
    return keep[0] if keep else None


def mpi_environment(cfg: Config, env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """Open MPI's settings for this rank, set in ``env`` before MPI is initialised (Horovod's
    init or mpi4py's import) unless the user set them. Returns what is in effect."""
    if cfg.runtime.mpi_yield_when_idle:
        env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    return {k: env[k] for k in ("OMPI_MCA_mpi_yield_when_idle",) if k in env}


BFC_ENV = "TF_CPU_ALLOCATOR_USE_BFC"


def allocator_environment(cfg: Config, env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """TensorFlow's host allocator for this process (``runtime.cpu_allocator``), set in
    ``env`` before TensorFlow makes its first allocation unless the user set it. Returns
    what is in effect: ``{"cpu_allocator": "bfc" | "malloc", "TF_CPU_ALLOCATOR_USE_BFC": ...}``.
    """
    if cfg.runtime.cpu_allocator == "bfc":
        env.setdefault(BFC_ENV, "1")
    value = env.get(BFC_ENV, "")
    bfc = value.strip().lower() in ("1", "true")  # how TensorFlow's ReadBoolFromEnvVar reads it
    return {"cpu_allocator": "bfc" if bfc else "malloc", BFC_ENV: value}


def host_memory_peak_bytes() -> int | None:
    """The peak of TensorFlow's host tensors in this process, from the BFC allocator's
    stats; None under malloc, which keeps none (TensorFlow refuses to report them)."""
    import tensorflow as tf

    try:
        return int(tf.config.experimental.get_memory_info("CPU:0")["peak"])
    except ValueError:
        return None


def thread_counts(cfg: Config, num_cores: int) -> tuple[int, int]:
    """(intra-op, inter-op) threads: the config's, or the cores this rank has and 0 (TF's)."""
    intra = cfg.runtime.intra_op_threads or max(1, num_cores)
    return intra, cfg.runtime.inter_op_threads


def configure_tensorflow(
    cfg: Config, topo: Topology, cores: Sequence[int], num_devices: int | None = None
) -> dict[str, Any]:
    """Thread pools, the visible GPUs, and the data-format check. Returns what it set.

    ``num_devices`` None: one GPU per local rank; else the process drives that many local
    devices (a local-device mode) and keeps that many GPUs visible
    (:func:`hvdbench.components.devices.visible_gpus`)."""
    import tensorflow as tf

    tfcompat.require_keras2()
    intra, inter = thread_counts(cfg, len(cores))
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    gpus = tf.config.list_physical_devices("GPU")
    keep = visible_gpus(len(gpus), topo.local_rank, num_devices)
    if gpus:
        tf.config.set_visible_devices([gpus[i] for i in keep], "GPU")
        for i in keep:
            tf.config.experimental.set_memory_growth(gpus[i], True)
    elif cfg.model.data_format == "channels_first":
        raise UsageError(
            "model.data_format: 'channels_first' needs a GPU; TensorFlow's CPU kernels "
            "(max pooling among them) are NHWC-only: use channels_last"
        )
    return {
        "cpus": list(cores),
        "intra_op_threads": intra,
        "inter_op_threads": inter,
        "gpus": [g.name for g in gpus],
        "visible_gpu": keep[0] if len(keep) == 1 and num_devices is None else None,
        "visible_gpus": keep,
    }
