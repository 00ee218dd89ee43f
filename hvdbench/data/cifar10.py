"""CIFAR-10 binary batches: records of 1 label byte and 3072 pixel bytes (R, G, B planes
of 32x32), read with ``FixedLengthRecordDataset``.

Training distortions follow the TensorFlow CIFAR-10 tutorial, at the model's input size:
pad and random crop, random flip, random brightness and contrast; every image (training
and evaluation) is then standardised per image, as in the tutorial.
"""

from __future__ import annotations

import tensorflow as tf

from hvdbench.config import Config
from hvdbench.data import layout, pipeline


def decode(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One binary record -> (32x32x3 float image in [0, 1], int32 label)."""
    raw = tf.io.decode_raw(record, tf.uint8)
    label = tf.cast(raw[0], tf.int32)
    image = tf.transpose(tf.reshape(raw[1:], (3, 32, 32)), (1, 2, 0))
    return tf.cast(image, tf.float32) / 255.0, label


def distort(image: tf.Tensor, size: int) -> tf.Tensor:
    """The tutorial's distortions, keeping the model's input size (pad 4, crop back)."""
    channels = image.shape[-1]
    image = tf.image.resize_with_crop_or_pad(image, size + 8, size + 8)
    image = tf.image.random_crop(image, (size, size, channels))
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_brightness(image, max_delta=63.0 / 255.0)
    return tf.image.random_contrast(image, lower=0.2, upper=1.8)


def dataset(
    cfg: Config,
    shape: tuple[int, int, int],
    *,
    training: bool,
    shard_index: int,
    num_shards: int,
    batch_size: int,
) -> tf.data.Dataset:
    files = layout.cifar10_files(cfg.data.dir, training)
    paths, shard_records = pipeline.shard_files(files.paths, num_shards, shard_index)
    records = tf.data.FixedLengthRecordDataset(paths, layout.CIFAR10_RECORD_BYTES)
    distorting = training and cfg.data.distortions
    fmt = cfg.model.data_format

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = decode(record)
        hwc = (shape[1], shape[2], shape[0]) if fmt == "channels_first" else shape
        image = pipeline.fit_to_model(image, hwc, "channels_last")
        if distorting:
            image = distort(image, hwc[0])
        image = tf.image.per_image_standardization(image)
        return pipeline.fit_to_model(image, shape, fmt), label

    return pipeline.batches(
        records,
        parse,
        cfg.data,
        batch_size,
        training=training,
        shard_records=(num_shards, shard_index) if shard_records else None,
        seed=cfg.train.seed + shard_index,
    )
