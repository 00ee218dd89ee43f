"""The modes: ``mode.name`` selects how the work is distributed.

:mod:`hvdbench.modes.registry` holds the :class:`Mode` interface and the registry; each
mode module registers its classes there. Importing this package imports every mode module
(none imports TensorFlow at import time), so the registry is complete whoever asks.
"""

from hvdbench.modes import horovod, tf_distribute
from hvdbench.modes.grpc import parameter_server
from hvdbench.modes.registry import Mode, declared, get, register, registered

__all__ = [
    "Mode",
    "declared",
    "get",
    "horovod",
    "parameter_server",
    "register",
    "registered",
    "tf_distribute",
]
