"""Every mode's input: the shards its pipelines read (``Mode.input_shards``, which each
mode's build uses) are disjoint and together cover the training split, read through the
real training pipeline (shuffled, repeated) as the modes read it."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from hvdbench import config, models, modes  # noqa: E402
from hvdbench.data import make_dataset  # noqa: E402
from tests import datagen  # noqa: E402

N = 101  # divides by neither 2 nor 3: uneven shards


def write_indexed_mnist(directory, n: int = N) -> None:
    """MNIST IDX files whose image i carries i in its first two pixels."""
    directory.mkdir(parents=True, exist_ok=True)
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    labels = (np.arange(n) % 10).astype(np.uint8)
    for prefix in ("train", "t10k"):
        (directory / f"{prefix}-images-idx3-ubyte").write_bytes(
            datagen._idx(2051, (n, 28, 28), images.tobytes())
        )
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(
            datagen._idx(2049, (n,), labels.tobytes())
        )


def indices(ds) -> list[int]:
    out = []
    for images, _ in ds:
        px = np.rint(images.numpy()[:, 0, :2, 0] * 255).astype(int)
        out.extend((px[:, 0] + 256 * px[:, 1]).tolist())
    return out


def shard_examples(cfg, shard: int, num_shards: int) -> list[int]:
    """One epoch of a shard as training reads it (its size from the one-pass read)."""
    shape = models.input_shape(cfg)
    once = indices(
        make_dataset(cfg, shape, training=False, shard_index=shard, num_shards=num_shards)
    )
    train = make_dataset(cfg, shape, shard_index=shard, num_shards=num_shards, batch_size=1)
    epoch = indices(train.take(len(once)))
    assert sorted(epoch) == sorted(once)  # shuffled before repeat: epochs do not mix
    assert epoch != once or len(once) < 3  # and it is shuffled
    return epoch


@pytest.mark.parametrize("mode", modes.registered())
@pytest.mark.parametrize("workers", [2, 3])
def test_each_mode_reads_disjoint_shards_covering_the_split(tmp_path, mode, workers):
    write_indexed_mnist(tmp_path)
    cfg = config.load(
        None,
        [
            f"--mode.name={mode}",
            # the other modes take their workers from the launch and refuse num_devices
            *([f"--mode.num_devices={workers}"] if mode in config.LOCAL_DEVICE_MODES else []),
            "--model.name=mnist_mlp",
            "--data.source=mnist",
            f"--data.dir={tmp_path}",
        ],
    )
    shards = modes.get(mode).input_shards(cfg, workers)
    assert len(shards) == workers  # one pipeline per worker, or per device
    seen = [shard_examples(cfg, *s) for s in shards]
    flat = [i for shard in seen for i in shard]
    assert len(flat) == len(set(flat)), "an example is in two shards"
    assert sorted(flat) == list(range(N)), "the shards miss part of the split"
    assert max(map(len, seen)) - min(map(len, seen)) <= 1


def test_cifar10_file_shards_of_a_local_device_mode(tmp_path):
    """Five files over five devices: each device reads one file, all five together."""
    datagen.write_cifar10(tmp_path, per_file=4, files=5, test=4, learnable=False)
    cfg = config.load(
        None,
        [
            "--mode.name=independent",
            "--mode.num_devices=5",
            "--model.name=trivial",
            "--data.source=cifar10",
            f"--data.dir={tmp_path}",
            "--data.distortions=false",
        ],
    )
    shape = models.input_shape(cfg)
    seen = []
    for shard in modes.get("independent").input_shards(cfg, 5):
        ds = make_dataset(cfg, shape, shard_index=shard[0], num_shards=shard[1], batch_size=1)
        seen.append({x.tobytes() for images, _ in ds.take(4) for x in images.numpy()})
    assert all(len(s) == 4 for s in seen)
    assert len(set().union(*seen)) == 20
