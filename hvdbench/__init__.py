"""hvdbench: a benchmark and training harness for distributed TensorFlow.

The command line (:mod:`hvdbench.cli`) validates a frozen config (:mod:`hvdbench.config`)
and hands it to one rank's run (:mod:`hvdbench.run`) or a study (:mod:`hvdbench.study`);
the run talks only to the mode registry (:mod:`hvdbench.modes`), whose modes are built
from :mod:`hvdbench.components`, :mod:`hvdbench.data`, :mod:`hvdbench.models` and
:mod:`hvdbench.launch`. Imports run that way only (``tests/unit/test_architecture.py``).
"""

from hvdbench import tfcompat

__version__ = "0.1.0"

# Keras 2 in every hvdbench process, before any of its modules imports TensorFlow.
tfcompat.use_legacy_keras()
