"""What each model needs, known without importing TensorFlow.

The config layer validates model names and image sizes against this table, so that a bad
config fails before TensorFlow is imported. ``hvdbench.models`` maps the same names to the
functions that build the networks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """A model's native input and output, and the smallest input it accepts."""

    image_size: int
    channels: int
    num_classes: int
    min_image_size: int
    has_batch_norm: bool
    description: str


MODEL_SPECS: dict[str, ModelSpec] = {
    "trivial": ModelSpec(
        32, 3, 10, 1, False, "flatten, 1-unit dense, classifier: near-zero compute"
    ),
    "mnist_mlp": ModelSpec(
        28, 1, 10, 1, False, "784-100-10 MLP of the classic distributed MNIST example"
    ),
    "cifar10_cnn": ModelSpec(
        32, 3, 10, 8, False, "TensorFlow CIFAR-10 tutorial network (conv-pool-LRN x2, 384, 192)"
    ),
    "resnet20": ModelSpec(
        32, 3, 10, 8, True, "CIFAR ResNet-20 (He et al. 2016, 3x3 blocks, 16-32-64 filters)"
    ),
    "resnet32": ModelSpec(32, 3, 10, 8, True, "CIFAR ResNet-32"),
    "resnet56": ModelSpec(32, 3, 10, 8, True, "CIFAR ResNet-56"),
    "resnet50": ModelSpec(224, 3, 1000, 32, True, "ResNet-50 (tf.keras.applications)"),
    "resnet101": ModelSpec(224, 3, 1000, 32, True, "ResNet-101 (tf.keras.applications)"),
    "resnet152": ModelSpec(224, 3, 1000, 32, True, "ResNet-152 (tf.keras.applications)"),
    "inception3": ModelSpec(299, 3, 1000, 75, True, "Inception v3 (tf.keras.applications)"),
    "vgg16": ModelSpec(224, 3, 1000, 32, False, "VGG-16 (tf.keras.applications)"),
    "xception": ModelSpec(299, 3, 1000, 71, True, "Xception (tf.keras.applications)"),
    "mobilenet": ModelSpec(224, 3, 1000, 32, True, "MobileNet v1 (tf.keras.applications)"),
}
