"""Which local devices a process uses: pure functions of the device counts, no TensorFlow.

* A mode with one compute device per process (horovod, the gRPC modes) sees one GPU, its
  local rank's (round robin when there are more ranks than GPUs).
* A local-device mode (``replicated``, ``independent``) uses ``mode.num_devices`` GPUs of
  its one process: the first ``mode.num_devices``. It refuses to start when the machine
  has GPUs but fewer than that, rather than falling back to CPUs; only a machine without
  any GPU runs it on ``mode.num_devices`` logical CPU devices (one split CPU), and the
  record says so (its ``devices`` are ``/cpu:i``).
"""

from __future__ import annotations

from hvdbench.errors import UsageError


def visible_gpus(num_gpus: int, local_rank: int, num_devices: int | None) -> list[int]:
    """Indices of the GPUs this process keeps visible, of ``num_gpus`` on its node:
    ``num_devices`` None means one device per process (its local rank's GPU)."""
    if num_gpus == 0:
        return []
    if num_devices is None:
        return [local_rank % num_gpus]
    if num_gpus < num_devices:
        raise UsageError(
            f"mode.num_devices: {num_devices} GPUs asked for, this machine has {num_gpus}; "
            f"use mode.num_devices <= {num_gpus}"
        )
    return list(range(num_devices))


def local_device_names(num_devices: int, num_visible_gpus: int) -> list[str]:
    """The TensorFlow device names a local-device mode places its replicas on: the
    visible GPUs when there are enough, logical CPU devices on a machine without GPUs."""
    if num_visible_gpus == 0:
        return [f"/cpu:{i}" for i in range(num_devices)]
    if num_visible_gpus < num_devices:
        raise UsageError(
            f"mode.num_devices: {num_devices} GPUs asked for, {num_visible_gpus} visible; "
            f"use mode.num_devices <= {num_visible_gpus}"
        )
    return [f"/gpu:{i}" for i in range(num_devices)]
