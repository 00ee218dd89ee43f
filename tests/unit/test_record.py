"""Result records: atomic, uniquely named, never a partial file."""

from __future__ import annotations

import json
import os

import pytest

from hvdbench.components import record


def test_write_atomic_leaves_only_the_whole_file(tmp_path):
    path = record.write_atomic(tmp_path / "sub" / "r.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path / "sub") == ["r.json"]


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = record.write_atomic(tmp_path / "r.json", {"v": 1})

    class Unserialisable:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        record.write_atomic(path, {"v": Unserialisable()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_record_names_are_unique_and_sortable():
    a = record.record_name("horovod", "resnet20", 2, when=0)
    b = record.record_name("horovod", "resnet20", 2, when=0)
    assert a != b and a.startswith("19700101T000000-horovod-resnet20-n2-") and a.endswith(".json")


def test_captured_env_filters_prefixes():
    env = {
        "HOROVOD_X": "1",
        "OMPI_Y": "2",
        "HOME": "/root",
        "SLURM_JOB_ID": "3",
        "TF_Z": "4",
        "NCCL_W": "5",
    }
    assert list(record.captured_env(env)) == [
        "HOROVOD_X",
        "NCCL_W",
        "OMPI_Y",
        "SLURM_JOB_ID",
        "TF_Z",
    ]


def test_hardware_names_the_cpu_model_cores_and_memory(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC 7B13\nstepping\t: 1\n"
        "flags\t\t: fpu sse avx avx2 fma avx512f avx512_bf16\nbogomips\t: 5192.29\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 9999\n"
    )
    hw = record.hardware(["/physical_device:GPU:0"], cpuinfo=str(cpuinfo))
    assert hw["cpu_model"] == "AMD EPYC 7B13"
    # what tells two VMs that both say "AMD EPYC" apart
    assert hw["cpu_id"] == "AuthenticAMD family 25 model 17 stepping 1"
    assert hw["cpu_isa"] == ["avx", "avx2", "fma", "avx512f", "avx512_bf16"]
    assert hw["bogomips"] == 5192.29
    assert hw["logical_cpus"] == os.cpu_count()
    assert 0 < hw["cpus_allowed"] <= hw["logical_cpus"]
    assert hw["memory_bytes"] > 2**28
    assert hw["gpus"] == ["/physical_device:GPU:0"]
    # this machine's own /proc/cpuinfo names a model
    assert record.cpu_model()
