"""Small generated data sets in the real on-disk formats, for the data tests.

CIFAR-10 binary batches and MNIST IDX files are written byte by byte from their published
layouts; ImageNet TFRecords hold real JPEGs in ``tf.train.Example``s with the Inception
feature names. The CIFAR set can be made learnable: each class has its own colour and
stripe pattern, which survives the training distortions (crop, flip, brightness, contrast).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import tarfile
from pathlib import Path

import numpy as np

CIFAR_RECORD = 1 + 32 * 32 * 3

# Ten well-separated colours (RGB, 0..255).
PALETTE = np.array(
    [
        [230, 30, 30],
        [30, 230, 30],
        [30, 30, 230],
        [230, 230, 30],
        [230, 30, 230],
        [30, 230, 230],
        [240, 240, 240],
        [20, 20, 20],
        [240, 140, 20],
        [120, 40, 200],
    ],
    dtype=np.float32,
)


def cifar_images(labels: np.ndarray, rng: np.random.Generator, learnable: bool) -> np.ndarray:
    """uint8 images of shape (n, 32, 32, 3): class colour + class stripes + noise, or noise."""
    n = len(labels)
    if not learnable:
        return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    rows = np.arange(32)[None, :, None, None]
    period = 2 + labels[:, None, None, None]  # horizontal stripes: flips and crops keep them
    stripes = np.where((rows // period) % 2 == 0, 1.0, 0.55)
    img = PALETTE[labels][:, None, None, :] * stripes
    img = img + rng.normal(0, 20, size=(n, 32, 32, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def cifar_records(n: int, seed: int, learnable: bool = True, classes: int = 10) -> bytes:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    images = cifar_images(labels, rng, learnable)
    planes = images.transpose(0, 3, 1, 2).reshape(n, -1)  # R, G, B planes, row-major
    out = np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1)
    return out.tobytes()


def write_cifar10(
    directory: str | os.PathLike[str],
    per_file: int = 64,
    files: int = 5,
    test: int = 100,
    learnable: bool = True,
    seed: int = 0,
) -> Path:
    """``data_batch_1..files.bin`` and ``test_batch.bin`` in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(1, files + 1):
        (d / f"data_batch_{i}.bin").write_bytes(cifar_records(per_file, seed + i, learnable))
    (d / "test_batch.bin").write_bytes(cifar_records(test, seed + 1000, learnable))
    return d


def cifar10_archive(path: str | os.PathLike[str], per_file: int = 8, test: int = 8) -> str:
    """A ``cifar-10-binary.tar.gz`` like the official one; returns its MD5."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for i, name in enumerate(names):
            data = cifar_records(test if name == "test_batch.bin" else per_file, i)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        meta = b"\n".join(
            c.encode()
            for c in "airplane automobile bird cat deer dog frog horse ship truck".split()
        )
        info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    Path(path).write_bytes(buf.getvalue())
    return hashlib.md5(buf.getvalue()).hexdigest()


def _idx(magic: int, shape: tuple[int, ...], body: bytes) -> bytes:
    return struct.pack(f">I{len(shape)}I", magic, *shape) + body


def write_mnist(
    directory: str | os.PathLike[str],
    train: int = 96,
    test: int = 40,
    gz: bool = False,
    seed: int = 0,
) -> Path:
    """The four IDX files; digit ``k`` is a bright horizontal bar at row 2k+4, plus noise."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 6, 4:24] = 255
        files = {
            f"{prefix}-images-idx3-ubyte": _idx(2051, (n, 28, 28), images.tobytes()),
            f"{prefix}-labels-idx1-ubyte": _idx(2049, (n,), labels.tobytes()),
        }
        for name, data in files.items():
            if gz:
                (d / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (d / name).write_bytes(data)
    return d


def write_imagenet(
    directory: str | os.PathLike[str],
    train_files: int = 2,
    val_files: int = 1,
    per_file: int = 24,
    size: int = 48,
    classes: int = 10,
    seed: int = 0,
) -> Path:
    """``train-0000i-of-0000N`` / ``validation-...`` TFRecords of JPEG Examples, labels
    1..classes as in the Inception layout (0 is background)."""
    import tensorflow as tf

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def example(label: int) -> bytes:
        colour = PALETTE[(label - 1) % len(PALETTE)]
        img = np.clip(colour + rng.normal(0, 25, size=(size, size + 8, 3)), 0, 255)
        jpeg = tf.io.encode_jpeg(tf.constant(img.astype(np.uint8))).numpy()
        feats = {
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
            "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"])),
        }
        return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()

    for prefix, count in (("train", train_files), ("validation", val_files)):
        for i in range(count):
            with tf.io.TFRecordWriter(str(d / f"{prefix}-{i:05d}-of-{count:05d}")) as w:
                for _ in range(per_file):
                    w.write(example(int(rng.integers(1, classes + 1))))
    return d
