"""A real data set for the training tests: scikit-learn's 1,797 handwritten digits (8x8,
16 grey levels), written in MNIST's IDX layout so that the ``mnist`` reader reads them.

No real data set can be downloaded where the tests run; ``sklearn.datasets.load_digits``
ships with scikit-learn. Each digit is scaled to 0..255, upsampled 3x (nearest) to 24x24
and centred in 28x28 as MNIST's digits are; a fixed, class-stratified share is held out
as the ``t10k`` split, which ``hvdbench eval`` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tests.datagen import _idx

HELD_OUT_PER_CLASS = 30  # 300 held-out digits, 1,497 to train on


def digits_28x28() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1797, 28, 28), labels uint8 (1797,)) in scikit-learn's order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # (n, 8, 8)
    big = np.kron(small, np.ones((3, 3), np.uint8))  # (n, 24, 24)
    images = np.zeros((len(big), 28, 28), np.uint8)
    images[:, 2:26, 2:26] = big
    return images, digits.target.astype(np.uint8)


def split(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``train`` and ``t10k``: HELD_OUT_PER_CLASS digits of each class held out, chosen
    at random with ``seed``; both splits shuffled."""
    images, labels = digits_28x28()
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), bool)
    for k in range(10):
        (idx,) = np.nonzero(labels == k)
        held[rng.choice(idx, HELD_OUT_PER_CLASS, replace=False)] = True
    out = {}
    for name, mask in (("train", ~held), ("t10k", held)):
        (idx,) = np.nonzero(mask)
        idx = rng.permutation(idx)
        out[name] = (images[idx], labels[idx])
    return out


def write_digits(directory: str | os.PathLike[str], seed: int = 0) -> Path:
    """The four MNIST IDX files of the digits in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in split(seed).items():
        n = len(labels)
        (d / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(2051, (n, 28, 28), images.tobytes()))
        (d / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(2049, (n,), labels.tobytes()))
    return d
