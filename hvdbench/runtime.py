"""Each rank's share of its node: cores, TensorFlow thread pools and the visible GPU.

``bind_cores`` must run before TensorFlow is imported: Linux affinity is per thread and
inherited at thread creation, so the thread pools have to be born inside the binding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hvdbench.config import Config
from hvdbench.errors import UsageError
from hvdbench.topology import Topology


def core_slice(cores: Sequence[int], local_rank: int, local_size: int) -> list[int]:
    """The ``local_rank``-th of ``local_size`` equal slices of ``cores``.

    With fewer cores than ranks, ranks share cores round-robin (one core each).
    """
    cores = sorted(cores)
    if local_size <= 1:
        return list(cores)
    per = len(cores) // local_size
    if per == 0:
        return [cores[local_rank % len(cores)]]
    return cores[local_rank * per : (local_rank + 1) * per]


def bind_cores(cfg: Config, topo: Topology, slot: tuple[int, int] | None = None) -> list[int]:
    """Bind this process to its slice of the cores it may use, and return the set it has.

    ``slot`` is (index, count) among the processes that split this node's cores: the local
    rank and size by default; a mode may say otherwise (:meth:`Mode.core_slot`), e.g. a ps
    task takes (0, 1), every core, and the workers beside it split the cores among them."""
    index, count = slot if slot is not None else (topo.local_rank, topo.local_size)
    available = sorted(os.sched_getaffinity(0))
    if cfg.runtime.bind_cores and count > 1:
        mine = core_slice(available, index, count)
        os.sched_setaffinity(0, mine)
    return sorted(os.sched_getaffinity(0))


def mpi_environment(cfg: Config, env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """Open MPI's settings for this rank, set in ``env`` before MPI is initialised (Horovod's
    init or mpi4py's import) unless the user set them. Returns what is in effect."""
    if cfg.runtime.mpi_yield_when_idle:
        env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    return {k: env[k] for k in ("OMPI_MCA_mpi_yield_when_idle",) if k in env}


def thread_counts(cfg: Config, num_cores: int) -> tuple[int, int]:
    """(intra-op, inter-op) threads: the config's, or the cores this rank has and 0 (TF's)."""
    intra = cfg.runtime.intra_op_threads or max(1, num_cores)
    return intra, cfg.runtime.inter_op_threads


def configure_tensorflow(cfg: Config, topo: Topology, cores: Sequence[int]) -> dict[str, Any]:
    """Thread pools, one GPU per local rank, and the data-format check. Returns what it set."""
    import tensorflow as tf

    from hvdbench import tfcompat

    tfcompat.require_keras2()
    intra, inter = thread_counts(cfg, len(cores))
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        tf.config.set_visible_devices(gpus[topo.local_rank % len(gpus)], "GPU")
        tf.config.experimental.set_memory_growth(gpus[topo.local_rank % len(gpus)], True)
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
        "visible_gpu": topo.local_rank % len(gpus) if gpus else None,
    }
