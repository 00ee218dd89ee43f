"""hvdbench: a benchmark and training harness for distributed TensorFlow."""

__version__ = "0.1.0"
