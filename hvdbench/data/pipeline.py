"""The tf.data pipeline shared by the real data sets: shard by rank, shuffle, parse and
distort in parallel, batch, prefetch.

Each reader (``cifar10``, ``mnist``, ``imagenet``) supplies a dataset of raw records and
a function turning one record into ``(image, label)``; this module does the rest the same
way for all of them, so every mode gets a ``tf.data.Dataset`` of batches of its shard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from hvdbench.config import DataConfig


def autotune(n: int) -> int:
    """``0`` in the config means tf.data.AUTOTUNE."""
    return n if n > 0 else tf.data.AUTOTUNE


def shard_files(paths: Sequence[str], num_shards: int, index: int) -> tuple[list[str], bool]:
    """This shard's files when they split evenly, else all of them and a flag to shard records.

    Splitting files keeps each rank from reading what it discards; when they do not split
    evenly, sharding records instead keeps the ranks' data the same size.
    """
    if num_shards > 1 and len(paths) % num_shards == 0:
        return list(paths)[index::num_shards], False
    return list(paths), num_shards > 1


def fit_to_model(image: tf.Tensor, shape: tuple[int, int, int], data_format: str) -> tf.Tensor:
    """Resize an HWC float image and convert its channels to the model's input shape."""
    if data_format == "channels_first":
        channels, height, width = shape
    else:
        height, width, channels = shape
    have = image.shape[-1]
    if have == 1 and channels == 3:
        image = tf.image.grayscale_to_rgb(image)
    elif have == 3 and channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    if image.shape[0] != height or image.shape[1] != width:
        image = tf.image.resize(image, (height, width))
    image = tf.ensure_shape(image, (height, width, channels))
    if data_format == "channels_first":
        image = tf.transpose(image, (2, 0, 1))
    return image


def batches(
    records: tf.data.Dataset,
    parse: Callable[..., tuple[tf.Tensor, tf.Tensor]],
    data: DataConfig,
    batch_size: int,
    *,
    training: bool,
    shard_records: tuple[int, int] | None,
    seed: int,
) -> tf.data.Dataset:
    """Records -> batches: the common tail of every reader.

    Training repeats forever, shuffles, and drops the last partial batch so every step has
    the same shape; evaluation reads its split once, in order, keeping the last batch.
    """
    if shard_records is not None:
        records = records.shard(*shard_records)
    if training:
        if data.shuffle_buffer > 0:
            records = records.shuffle(data.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        records = records.repeat()
    ds = records.map(
        parse, num_parallel_calls=autotune(data.parallel_calls), deterministic=not training
    )
    ds = ds.batch(batch_size, drop_remainder=training)
    if tf.config.list_logical_devices("GPU"):
        return ds.apply(
            tf.data.experimental.prefetch_to_device("/gpu:0", autotune(data.prefetch_batches))
        )
    return ds.prefetch(autotune(data.prefetch_batches))


def interleave_files(
    paths: Sequence[str], open_file: Callable[[Any], tf.data.Dataset], data: DataConfig
) -> tf.data.Dataset:
    """Read several files at once, as tf_cnn_benchmarks does for ImageNet shards."""
    files = tf.data.Dataset.from_tensor_slices(list(paths))
    return files.interleave(
        open_file,
        cycle_length=min(len(paths), 8),
        num_parallel_calls=autotune(data.parallel_calls),
        deterministic=True,
    )
