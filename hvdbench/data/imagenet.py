"""ImageNet as TFRecords in the layout of tf_cnn_benchmarks and the Inception scripts:
``train-*-of-*`` and ``validation-*-of-*`` shards of ``tf.train.Example`` with the JPEG in
``image/encoded`` and the class in ``image/class/label``.

Labels there run from 1 to 1000 (0 is a background class that tf_cnn_benchmarks keeps as a
1001st output); hvdbench's ImageNet models have 1000 outputs, so the label is shifted down
by one. Training crops a random box (area 5-100%, aspect 3:4-4:3, as tf_cnn_benchmarks),
decoding only the crop, then resizes and flips; evaluation takes the central 87.5% crop.
Pixels are scaled to [-1, 1].
"""

from __future__ import annotations

import tensorflow as tf

from hvdbench.config import Config
from hvdbench.data import layout, pipeline

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}
LABEL_OFFSET = 1  # Inception layout: 1..1000, 0 is background


def train_image(encoded: tf.Tensor, height: int, width: int, distort: bool) -> tf.Tensor:
    if not distort:
        image = tf.io.decode_jpeg(encoded, channels=3)
    else:
        whole = tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4))
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.io.extract_jpeg_shape(encoded),
            bounding_boxes=whole,
            min_object_covered=0.1,
            aspect_ratio_range=(0.75, 1.33),
            area_range=(0.05, 1.0),
            max_attempts=100,
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
    image = tf.image.resize(tf.cast(image, tf.float32), (height, width))
    if distort:
        image = tf.image.random_flip_left_right(image)
    return image


def eval_image(encoded: tf.Tensor, height: int, width: int) -> tf.Tensor:
    image = tf.image.convert_image_dtype(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
    image = tf.image.central_crop(image, 0.875)
    return tf.image.resize(image, (height, width)) * 255.0


def dataset(
    cfg: Config,
    shape: tuple[int, int, int],
    *,
    training: bool,
    shard_index: int,
    num_shards: int,
    batch_size: int,
) -> tf.data.Dataset:
    files = layout.imagenet_files(cfg.data.dir, training)
    paths, shard_records = pipeline.shard_files(files.paths, num_shards, shard_index)
    records = pipeline.interleave_files(paths, tf.data.TFRecordDataset, cfg.data)
    fmt = cfg.model.data_format
    hwc = (shape[1], shape[2], shape[0]) if fmt == "channels_first" else shape
    distort = training and cfg.data.distortions

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(record, FEATURES)
        encoded = example["image/encoded"]
        label = tf.cast(example["image/class/label"], tf.int32) - LABEL_OFFSET
        if training:
            image = train_image(encoded, hwc[0], hwc[1], distort)
        else:
            image = eval_image(encoded, hwc[0], hwc[1])
        image = image / 127.5 - 1.0
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
