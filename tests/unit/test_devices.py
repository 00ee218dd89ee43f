"""Device selection on fake device counts: one GPU per rank in one-device-per-process
modes; mode.num_devices GPUs, or a refusal, in the local-device modes; logical CPUs only
on a machine without GPUs."""

from __future__ import annotations

import pytest

from hvdbench.components.devices import local_device_names, visible_gpus
from hvdbench.errors import UsageError


@pytest.mark.parametrize(
    "gpus, local_rank, expected", [(4, 0, [0]), (4, 3, [3]), (4, 5, [1]), (1, 2, [0]), (0, 1, [])]
)
def test_one_device_per_process_pins_its_local_ranks_gpu(gpus, local_rank, expected):
    assert visible_gpus(gpus, local_rank, None) == expected


def test_local_device_modes_keep_num_devices_gpus_whatever_the_local_rank():
    assert visible_gpus(8, 0, 4) == [0, 1, 2, 3]
    assert visible_gpus(4, 3, 4) == [0, 1, 2, 3]
    assert visible_gpus(0, 0, 4) == []  # no GPU at all: logical CPU devices


def test_too_few_gpus_is_refused_not_replaced_by_cpus():
    with pytest.raises(UsageError) as e:
        visible_gpus(2, 0, 4)
    assert str(e.value) == (
        "mode.num_devices: 4 GPUs asked for, this machine has 2; use mode.num_devices <= 2"
    )
    with pytest.raises(UsageError, match=r"^mode.num_devices: 3 GPUs asked for, 1 visible"):
        local_device_names(3, 1)


def test_device_names():
    assert local_device_names(2, 4) == ["/gpu:0", "/gpu:1"]
    assert local_device_names(3, 0) == ["/cpu:0", "/cpu:1", "/cpu:2"]
