"""Where each real data set's files live and whether they look right, without TensorFlow.

The command line checks the data directory with these functions before it launches ranks,
so that a missing or malformed directory fails in a second with one line naming the files
expected, instead of as a tf.data error inside every rank.
"""

from __future__ import annotations

import glob
import gzip
import os
import re
import struct
from dataclasses import dataclass

from hvdbench.errors import UsageError

CIFAR10_RECORD_BYTES = 1 + 32 * 32 * 3  # label byte, then 3 channel planes of 32x32
CIFAR10_SUBDIR = "cifar-10-batches-bin"  # what the official archive extracts to
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_EVAL = ("test_batch.bin",)

MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_IMAGES_MAGIC = 2051
MNIST_LABELS_MAGIC = 2049

IMAGENET_PREFIX = {True: "train", False: "validation"}


@dataclass(frozen=True)
class Files:
    """The files of one split of a data set, checked, and how many examples they hold
    (None where it is unknown without reading every record)."""

    source: str
    paths: tuple[str, ...]
    num_examples: int | None


def _split(training: bool) -> str:
    return "training" if training else "evaluation"


def _need_dir(source: str, directory: str) -> None:
    if not directory:
        raise UsageError(f"data.dir: data.source={source!r} needs the directory of its files")
    if not os.path.isdir(directory):
        raise UsageError(f"data.dir: {directory!r} is not a directory ({_expect(source)})")


def _expect(source: str) -> str:
    return {
        "cifar10": "expected CIFAR-10 binary batches data_batch_1.bin..data_batch_5.bin and "
        "test_batch.bin, directly or under cifar-10-batches-bin/; `hvdbench data cifar10 "
        "--dest DIR` fetches them",
        "mnist": "expected MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz)",
        "imagenet": "expected ImageNet TFRecords train-*-of-* and validation-*-of-* "
        "of tf.train.Examples with image/encoded (JPEG) and image/class/label, as "
        "tf_cnn_benchmarks and the Inception scripts write them",
    }[source]


def cifar10_files(directory: str, training: bool) -> Files:
    """CIFAR-10's binary batches: ``data_batch_N.bin`` to train, ``test_batch.bin`` to evaluate."""
    _need_dir("cifar10", directory)
    root = directory
    if not glob.glob(os.path.join(root, "*_batch*.bin")) and os.path.isdir(
        os.path.join(directory, CIFAR10_SUBDIR)
    ):
        root = os.path.join(directory, CIFAR10_SUBDIR)
    if training:
        paths = sorted(
            glob.glob(os.path.join(root, "data_batch_*.bin")),
            key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0),
        )
    else:
        paths = [p for p in (os.path.join(root, n) for n in CIFAR10_EVAL) if os.path.exists(p)]
    if not paths:
        raise UsageError(
            f"data.dir: {directory!r} has no CIFAR-10 {_split(training)} files; "
            + _expect("cifar10")
        )
    total = 0
    for p in paths:
        size = os.path.getsize(p)
        if size == 0 or size % CIFAR10_RECORD_BYTES:
            raise UsageError(
                f"data.dir: {p} is not a CIFAR-10 binary batch: {size} bytes is not a positive "
                f"multiple of {CIFAR10_RECORD_BYTES} (1 label byte + 3072 pixel bytes); "
                + _expect("cifar10")
            )
        total += size // CIFAR10_RECORD_BYTES
    return Files("cifar10", tuple(paths), total)


def _idx_header(path: str, magic: int, dims: int) -> tuple[int, ...]:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4 + 4 * dims)
    except (OSError, EOFError) as e:
        raise UsageError(f"data.dir: {path} cannot be read as an IDX file ({e})") from None
    if len(head) < 4 + 4 * dims or struct.unpack(">I", head[:4])[0] != magic:
        raise UsageError(
            f"data.dir: {path} is not an MNIST IDX file (magic number {magic} expected); "
            + _expect("mnist")
        )
    shape = struct.unpack(f">{dims}I", head[4:])
    if not path.endswith(".gz"):
        expected = 4 + 4 * dims
        count = 1
        for d in shape:
            count *= d
        expected += count
        if os.path.getsize(path) != expected:
            raise UsageError(
                f"data.dir: {path} is truncated or padded: {os.path.getsize(path)} bytes, "
                f"its header {shape} says {expected}"
            )
    return shape


def mnist_files(directory: str, training: bool) -> Files:
    """MNIST's IDX pair of a split (images then labels), plain or gzipped."""
    _need_dir("mnist", directory)
    paths = []
    for name in MNIST_FILES[training]:
        found = [p for p in (os.path.join(directory, n) for n in (name, name + ".gz"))]
        found = [p for p in found if os.path.exists(p)]
        if not found:
            raise UsageError(
                f"data.dir: {directory!r} has no {name} for {_split(training)}; " + _expect("mnist")
            )
        paths.append(found[0])
    n_img, rows, cols = _idx_header(paths[0], MNIST_IMAGES_MAGIC, 3)
    (n_lab,) = _idx_header(paths[1], MNIST_LABELS_MAGIC, 1)
    if n_img != n_lab or (rows, cols) != (28, 28):
        raise UsageError(
            f"data.dir: MNIST {_split(training)} files disagree: {n_img} images of "
            f"{rows}x{cols} (28x28 expected) and {n_lab} labels"
        )
    return Files("mnist", tuple(paths), n_img)


def imagenet_files(directory: str, training: bool) -> Files:
    """ImageNet TFRecord shards ``train-00000-of-01024`` / ``validation-00000-of-00128``."""
    _need_dir("imagenet", directory)
    prefix = IMAGENET_PREFIX[training]
    paths = sorted(glob.glob(os.path.join(directory, f"{prefix}-*-of-*")))
    if not paths:
        raise UsageError(
            f"data.dir: {directory!r} has no {prefix}-*-of-* files for {_split(training)}; "
            + _expect("imagenet")
        )
    for p in paths:
        size = os.path.getsize(p)
        with open(p, "rb") as f:
            head = f.read(8)
        # A TFRecord starts with the uint64 length of its first record, then 4+len+4 bytes.
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if size < 16 or not 0 < length <= size - 16:
            raise UsageError(f"data.dir: {p} is not a TFRecord file; " + _expect("imagenet"))
    return Files("imagenet", tuple(paths), None)


_CHECKERS = {"cifar10": cifar10_files, "mnist": mnist_files, "imagenet": imagenet_files}


def files(source: str, directory: str, training: bool) -> Files | None:
    """The checked files of ``source``'s split, or None for synthetic data."""
    if source == "synthetic":
        return None
    return _CHECKERS[source](directory, training)
