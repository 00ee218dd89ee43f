"""Bad input that used to reach TensorFlow or a Python traceback: each ends in one line
naming the key, exit code 2 and nothing written, in well under a second, with no
TensorFlow imported (hvdbench.launch.preflight, config.check_distinct_tasks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hvdbench import config
from hvdbench.cli import main
from hvdbench.errors import UsageError
from hvdbench.launch import preflight

CASES = [
    (
        ["run", "--output.dir=/proc/forbidden"],
        "output.dir: cannot create '/proc/forbidden' (No such file or directory in /proc)",
    ),
    (
        ["run", "--train.per_device_batch_size=99999999999"],
        "train.per_device_batch_size: the input batch alone needs 99999999999 images x "
        "32x32x3 x 4 bytes = 1.1 PiB, more than this node's",
    ),
    (
        ["run", "--model.image_size=100000"],
        "model.image_size: the input batch alone needs 32 images x 100000x100000x3 x 4 bytes "
        "= 3.5 TiB, more than this node's",
    ),
    (
        ["data", "cifar10", "--dest", "/dev/null/x"],
        "--dest: cannot create '/dev/null/x': /dev/null is not a directory",
    ),
    (
        [
            "run",
            "--mode.name=parameter_server",
            "--cluster.job_name=worker",
            "--cluster.ps_hosts=b:2222",
            "--cluster.worker_hosts=a:2222,a:2222",
        ],
        "cluster.worker_hosts: a:2222 is given to worker task 0 and to worker task 1; every "
        "task needs its own host:port",
    ),
    (
        [
            "run",
            "--mode.name=parameter_server",
            "--cluster.job_name=worker",
            "--cluster.ps_hosts=a:2222",
            "--cluster.worker_hosts=b:2222,a:2222",
        ],
        "cluster.worker_hosts: a:2222 is given to ps task 0 and to worker task 1",
    ),
    (
        ["run", "--checkpoint.dir=/dev/null/ckpt"],
        "checkpoint.dir: cannot create '/dev/null/ckpt': /dev/null is not a directory",
    ),
    (
        ["run", "--summary.dir=/proc/tb"],
        "summary.dir: cannot create '/proc/tb'",
    ),
    (
        ["run", "--trace.steps=2,3", "--trace.dir=/proc/tr"],
        "trace.dir: cannot create '/proc/tr'",
    ),
    (
        ["eval", "--output.dir=/proc/forbidden"],
        "output.dir: cannot create '/proc/forbidden'",
    ),
    (
        ["run", "--ps.start_timeout_s=3"],
        "config key 'ps.start_timeout_s' was replaced by 'launch.startup_timeout_s'",
    ),
]


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_bad_input_is_one_line_exit_2_before_tensorflow(capsys, argv, message):
    t0 = time.monotonic()
    code = main(argv)
    took = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hvdbench: error: " + message), lines[0]
    assert "Traceback" not in err
    assert took < 1.0, took


def test_none_of_them_imports_tensorflow():
    script = (
        "import sys\n"
        "from hvdbench.cli import main\n"
        f"cases = {[c[0] for c in CASES]!r}\n"
        "codes = [main(a) for a in cases]\n"
        "assert codes == [2] * len(cases), codes\n"
        "assert 'tensorflow' not in sys.modules and 'horovod' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_an_existing_writable_directory_and_a_creatable_one_pass(tmp_path):
    preflight.check_writable("output.dir", str(tmp_path))
    preflight.check_writable("output.dir", str(tmp_path / "a" / "b"))
    assert os.listdir(tmp_path) == []  # the probe is gone, nothing was created


def test_a_read_only_directory_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    # root ignores permission bits: make the directory unwritable through a read-only
    # bind mount when we can, else through the bits for a non-root user
    if os.geteuid() == 0:
        r = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True)
        if r.returncode != 0:
            r = subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True)
            r = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True)
        assert r.returncode == 0, r.stderr
    else:
        ro.chmod(0o500)
    try:
        with pytest.raises(UsageError, match=r"^output\.dir: cannot write to '.*ro' \("):
            preflight.check_writable("output.dir", str(ro))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=True)


def test_memory_arithmetic_counts_ranks_and_devices():
    cfg = config.load(None, ["--train.per_device_batch_size=1024", "--model.name=resnet50"])
    need = 1024 * 224 * 224 * 3 * 4  # 616.6 MB for one rank
    preflight.check_memory(cfg, 1, memory=need)  # exactly fits
    with pytest.raises(UsageError, match=r"x 2 ranks on this node = 1\.1 GiB, more than"):
        preflight.check_memory(cfg, 2, memory=need)
    local = config.load(
        None, ["--mode.name=replicated", "--mode.num_devices=4", "--model.name=resnet50"]
    )
    with pytest.raises(UsageError, match=r"32 images x 4 devices x 224x224x3"):
        preflight.check_memory(local, 1, memory=32 * 224 * 224 * 3 * 4 * 3)
