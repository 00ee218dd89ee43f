"""The tf.data readers on small generated files in each real format: shapes, labels read
back exactly, shards disjoint and covering the split, distortions only when training."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from hvdbench import config, models  # noqa: E402
from hvdbench.data import make_dataset, make_input  # noqa: E402
from tests import datagen  # noqa: E402


def cfg_for(source: str, directory, model: str, *extra: str) -> config.Config:
    return config.load(
        None,
        [f"--data.source={source}", f"--data.dir={directory}", f"--model.name={model}", *extra],
    )


def labels_of(ds) -> list[int]:
    return [int(v) for _, y in ds for v in y.numpy()]


def cifar_labels(path) -> list[int]:
    raw = np.frombuffer(path.read_bytes(), np.uint8).reshape(-1, datagen.CIFAR_RECORD)
    return raw[:, 0].tolist()


def test_cifar10_eval_reads_labels_and_pixels_exactly(tmp_path):
    datagen.write_cifar10(tmp_path, per_file=4, files=2, test=10)
    cfg = cfg_for("cifar10", tmp_path, "cifar10_cnn")
    ds = make_dataset(cfg, models.input_shape(cfg), training=False, batch_size=4)
    got = labels_of(ds)
    assert got == cifar_labels(tmp_path / "test_batch.bin")  # in order, last batch kept
    images = np.concatenate([x.numpy() for x, _ in ds])
    assert images.shape == (10, 32, 32, 3)
    # per-image standardisation: zero mean, unit variance per image
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(images.std(axis=(1, 2, 3)), 1, atol=1e-2)
    # the channel order survives: the first record's red plane vs its blue plane
    raw = np.frombuffer((tmp_path / "test_batch.bin").read_bytes()[:3073], np.uint8)
    rgb = raw[1:].reshape(3, 32, 32).transpose(1, 2, 0).astype(np.float32)
    expect = (rgb - rgb.mean()) / max(rgb.std(), 1 / np.sqrt(rgb.size))
    np.testing.assert_allclose(images[0], expect, atol=1e-3)


def test_cifar10_training_shards_are_disjoint_and_distorted(tmp_path):
    datagen.write_cifar10(tmp_path, per_file=6, files=3, test=4)  # 3 files: record sharding
    cfg = cfg_for("cifar10", tmp_path, "cifar10_cnn", "--data.shuffle_buffer=0")
    shape = models.input_shape(cfg)
    all_labels = sum((cifar_labels(tmp_path / f"data_batch_{i}.bin") for i in (1, 2, 3)), [])
    seen = []
    for shard in (0, 1):
        ds = make_dataset(cfg, shape, shard_index=shard, num_shards=2, batch_size=3)
        seen.append(labels_of(ds.take(3)))  # 9 examples = one epoch of this shard
    assert seen[0] == all_labels[0::2] and seen[1] == all_labels[1::2]
    # distortions: two passes over the same record differ; evaluation is deterministic
    ds = make_dataset(cfg, shape, batch_size=18)
    epoch1, epoch2 = (x.numpy() for x, _ in ds.take(2))
    assert not np.allclose(epoch1, epoch2)
    nodist = cfg_for(
        "cifar10", tmp_path, "cifar10_cnn", "--data.shuffle_buffer=0", "--data.distortions=false"
    )
    ds = make_dataset(nodist, shape, batch_size=18)
    a, b = (x.numpy() for x, _ in ds.take(2))
    np.testing.assert_allclose(a, b)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_pairs(tmp_path, gz):
    datagen.write_mnist(tmp_path, train=10, test=6, gz=gz)
    cfg = cfg_for("mnist", tmp_path, "mnist_mlp")
    ds = make_dataset(cfg, models.input_shape(cfg), training=False, batch_size=4)
    x, y = next(iter(ds))
    assert x.shape == (4, 28, 28, 1) and x.dtype == tf.float32
    # each generated digit k has a bright bar at rows 2k+4..2k+5
    for img, k in zip(x.numpy(), y.numpy()):
        assert img[2 * k + 4, 10, 0] == 1.0
    assert sum(1 for _ in ds.unbatch()) == 6


def test_imagenet_tfrecords_decode_and_shift_labels(tmp_path):
    datagen.write_imagenet(tmp_path, train_files=2, val_files=1, per_file=6, size=40)
    cfg = cfg_for("imagenet", tmp_path, "trivial")
    ds = make_dataset(cfg, models.input_shape(cfg), training=False, batch_size=6)
    x, y = next(iter(ds))
    assert x.shape == (6, 32, 32, 3)
    assert -1.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    records = [
        tf.train.Example.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(tmp_path / "validation-00000-of-00001"))
    ]
    stored = [e.features.feature["image/class/label"].int64_list.value[0] for e in records]
    assert y.numpy().tolist() == [s - 1 for s in stored]
    # two train files, two ranks: each rank reads its own file
    for shard in (0, 1):
        it = make_input(cfg, models.input_shape(cfg), 10, shard, 2)
        images, labels = it()
        assert images.shape == (cfg.train.per_device_batch_size, 32, 32, 3)


def test_undecodable_content_is_one_line_usage_error(tmp_path):
    from hvdbench.errors import UsageError

    for prefix in ("train", "validation"):
        with tf.io.TFRecordWriter(str(tmp_path / f"{prefix}-00000-of-00001")) as w:
            feats = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"nojpeg"])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    cfg = cfg_for("imagenet", tmp_path, "trivial", "--train.per_device_batch_size=1")
    next_batch = make_input(cfg, models.input_shape(cfg), 10, 0, 1)
    with pytest.raises(
        UsageError,
        match=r"^data.dir: reading imagenet data from .* failed: "
        r"Invalid JPEG data",
    ) as e:
        next_batch()
    assert "\n" not in str(e.value) and "{{" not in str(e.value)
