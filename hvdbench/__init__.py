"""hvdbench: a benchmark and training harness for distributed TensorFlow."""

from hvdbench import tfcompat

__version__ = "0.1.0"

# Keras 2 in every hvdbench process, before any of its modules imports TensorFlow.
tfcompat.use_legacy_keras()
