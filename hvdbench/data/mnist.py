"""MNIST's IDX files: a 16-byte header then 28x28 uint8 images, and an 8-byte header then
uint8 labels, read as two zipped ``FixedLengthRecordDataset`` streams (gzip or plain).

MNIST gets no training distortions: flipping or cropping digits changes what they are,
and the classic distributed MNIST example trains on the images as they are.
"""

from __future__ import annotations

import tensorflow as tf

from hvdbench.config import Config
from hvdbench.data import layout, pipeline


def dataset(
    cfg: Config,
    shape: tuple[int, int, int],
    *,
    training: bool,
    shard_index: int,
    num_shards: int,
    batch_size: int,
) -> tf.data.Dataset:
    files = layout.mnist_files(cfg.data.dir, training)
    images_path, labels_path = files.paths

    def gz(path: str) -> str:
        return "GZIP" if path.endswith(".gz") else ""

    images = tf.data.FixedLengthRecordDataset(
        images_path, 28 * 28, header_bytes=16, compression_type=gz(images_path)
    )
    labels = tf.data.FixedLengthRecordDataset(
        labels_path, 1, header_bytes=8, compression_type=gz(labels_path)
    )
    records = tf.data.Dataset.zip((images, labels))
    fmt = cfg.model.data_format

    def parse(image_bytes: tf.Tensor, label_byte: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.reshape(tf.io.decode_raw(image_bytes, tf.uint8), (28, 28, 1))
        label = tf.cast(tf.io.decode_raw(label_byte, tf.uint8)[0], tf.int32)
        image = tf.cast(image, tf.float32) / 255.0
        return pipeline.fit_to_model(image, shape, fmt), label

    return pipeline.batches(
        records,
        parse,
        cfg.data,
        batch_size,
        training=training,
        shard_records=(num_shards, shard_index) if num_shards > 1 else None,
        seed=cfg.train.seed + shard_index,
    )
