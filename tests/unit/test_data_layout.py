"""Data directory checks: a missing or malformed directory is one line naming the files
expected, before TensorFlow is imported. No TensorFlow here."""

from __future__ import annotations

import gzip
import sys

import pytest

from hvdbench import config
from hvdbench.data import layout
from hvdbench.errors import UsageError
from tests import datagen
from tests.conftest import run


def test_cifar10_files_found_directly_and_under_subdir(tmp_path):
    datagen.write_cifar10(tmp_path / "a", per_file=3, files=5, test=4)
    train = layout.cifar10_files(str(tmp_path / "a"), training=True)
    assert [p.rsplit("/", 1)[1] for p in train.paths] == list(layout.CIFAR10_TRAIN)
    assert train.num_examples == 15
    datagen.write_cifar10(tmp_path / "b" / "cifar-10-batches-bin", per_file=2, files=2, test=4)
    assert layout.cifar10_files(str(tmp_path / "b"), training=False).num_examples == 4


def test_cifar10_missing_names_expected_files(tmp_path):
    with pytest.raises(UsageError, match=r"no CIFAR-10 training files.*data_batch_1.bin"):
        layout.cifar10_files(str(tmp_path), training=True)
    with pytest.raises(UsageError, match=r"is not a directory"):
        layout.cifar10_files(str(tmp_path / "nope"), training=True)


def test_cifar10_malformed_size(tmp_path):
    datagen.write_cifar10(tmp_path, per_file=2, files=1, test=2)
    with open(tmp_path / "test_batch.bin", "ab") as f:
        f.write(b"xx")
    with pytest.raises(UsageError, match=r"test_batch.bin is not a CIFAR-10 binary batch.*3073"):
        layout.cifar10_files(str(tmp_path), training=False)


def test_mnist_plain_and_gz(tmp_path):
    datagen.write_mnist(tmp_path / "p", train=7, test=5)
    datagen.write_mnist(tmp_path / "g", train=7, test=5, gz=True)
    assert layout.mnist_files(str(tmp_path / "p"), training=True).num_examples == 7
    assert layout.mnist_files(str(tmp_path / "g"), training=False).num_examples == 5


def test_mnist_bad_magic_truncation_and_missing(tmp_path):
    datagen.write_mnist(tmp_path, train=4, test=3)
    img = tmp_path / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:-10])
    with pytest.raises(UsageError, match=r"truncated"):
        layout.mnist_files(str(tmp_path), training=True)
    lab = tmp_path / "t10k-labels-idx1-ubyte"
    lab.write_bytes(b"\x00\x00\x08\x03" + lab.read_bytes()[4:])
    with pytest.raises(UsageError, match=r"not an MNIST IDX file"):
        layout.mnist_files(str(tmp_path), training=False)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(UsageError, match=r"no t10k-images-idx3-ubyte.*train-images-idx3-ubyte"):
        layout.mnist_files(str(tmp_path), training=False)
    g = tmp_path / "gz"
    g.mkdir()
    (g / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"garbage!" * 4))
    (g / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UsageError, match=r"train-images-idx3-ubyte.gz is not an MNIST IDX"):
        layout.mnist_files(str(g), training=True)


def test_imagenet_missing_and_not_tfrecord(tmp_path):
    with pytest.raises(UsageError, match=r"no train-\*-of-\* files.*image/encoded"):
        layout.imagenet_files(str(tmp_path), training=True)
    (tmp_path / "validation-00000-of-00001").write_bytes(b"\xff" * 64)
    with pytest.raises(UsageError, match=r"is not a TFRecord file"):
        layout.imagenet_files(str(tmp_path), training=False)


def test_config_real_source_needs_dir_and_trace_steps():
    with pytest.raises(UsageError, match=r"data.dir: data.source='mnist' needs"):
        config.load(None, ["--data.source=mnist"])
    with pytest.raises(UsageError, match=r"data.source: 'cifar100' is not one of"):
        config.load(None, ["--data.source=cifar100", "--data.dir=/x"])
    assert config.trace_steps("10,12") == (10, 12)
    assert config.trace_steps("7") == (7, 7)
    assert config.trace_steps("") is None
    for bad in ("0,3", "5,2", "a,b", "1,2,3"):
        with pytest.raises(UsageError, match=r"trace.steps"):
            config.trace_steps(bad)
    with pytest.raises(UsageError, match=r"checkpoint.max_to_keep: must be >= 2"):
        config.load(None, ["--checkpoint.max_to_keep=1"])


NO_TF = (
    "import sys; from hvdbench.cli import main; rc = main(sys.argv[1:]); "
    "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; sys.exit(rc)"
)


def test_cli_missing_data_dir_is_one_line_exit_2_before_tensorflow(tmp_path):
    r = run(
        [
            sys.executable,
            "-c",
            NO_TF,
            "run",
            "--np",
            "2",
            "--data.source=cifar10",
            f"--data.dir={tmp_path}",
        ],
        timeout=60,
    )
    assert r.returncode == 2, r.output  # an AssertionError would exit 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "data_batch_1.bin" in lines[0] and "test_batch.bin" in lines[0]


def test_cli_eval_without_checkpoint_is_one_line_before_tensorflow(tmp_path):
    datagen.write_mnist(tmp_path / "m", train=4, test=4)
    r = run(
        [
            sys.executable,
            "-c",
            NO_TF,
            "eval",
            "--model.name=mnist_mlp",
            "--data.source=mnist",
            f"--data.dir={tmp_path / 'm'}",
            f"--checkpoint.dir={tmp_path / 'ck'}",
        ],
        timeout=60,
    )
    assert r.returncode == 2, r.output
    assert r.stderr.strip().count("\n") == 0 and "no checkpoint" in r.stderr


def test_input_pipeline_verdict_arithmetic():
    from hvdbench.components import metrics
    from hvdbench.run import hooks

    real = metrics.aggregate(
        [metrics.RankMeasurement(r, "h", 10, (0.2, 0.2), 0.4) for r in range(2)]
    )
    gathered = [{"synthetic_step_times": [0.1, 0.1]}, {"synthetic_step_times": [0.1, 0.1]}]
    p = hooks.input_pipeline(gathered, real)
    assert p["real_over_synthetic_step_time"] == pytest.approx(2.0)
    assert p["synthetic_per_device_images_per_sec"] == pytest.approx(100.0)
    assert p["real_per_device_images_per_sec"] == pytest.approx(50.0)
    assert p["input_bound"] is True
    close = [{"synthetic_step_times": [0.19, 0.19]}] * 2
    assert hooks.input_pipeline(close, real)["input_bound"] is False  # within 10%
