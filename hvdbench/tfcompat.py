"""TensorFlow and Keras across the supported releases: the one module that knows them.

hvdbench uses the Keras 2 API on purpose: the graph modes build Keras layers inside
``tf.compat.v1`` sessions, and Horovod's ``DistributedGradientTape`` needs Keras 2
variables. From TensorFlow 2.16 on, ``tf.keras`` is Keras 3 unless ``TF_USE_LEGACY_KERAS=1``
selects the ``tf-keras`` package, and TensorFlow reads that variable once, when it is
imported (2.15 reads it too, but needs it unset). So :func:`use_legacy_keras` runs when the ``hvdbench`` package is imported,
before any of its modules imports TensorFlow, in every process hvdbench starts or a launcher
starts for it (the parent, ranks, ps tasks, ``eval``); children inherit it.
:func:`require_keras2` stops a process that finds Keras 3 active anyway.

Which TensorFlow releases hvdbench installs, and which of them Horovod 0.28.1 builds
against, is the Makefile's matrix; :data:`HOROVOD_TF` is the same list (a unit test keeps
them equal), so that ``--mode.name=horovod`` can say where Horovod is to be had.

This module imports TensorFlow only inside the functions that need it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import MutableMapping
from importlib import metadata
from typing import Any

from hvdbench.errors import UsageError

LEGACY_KERAS_ENV = "TF_USE_LEGACY_KERAS"
KERAS3_FROM = (2, 16)  # the first release whose tf.keras is Keras 3
# The Makefile's matrix: one exact release per supported minor.
TF_PINS = {
    "2.14": "2.14.1",
    "2.15": "2.15.1",
    "2.16": "2.16.2",
    "2.17": "2.17.1",
    "2.18": "2.18.1",
    "2.19": "2.19.1",
    "2.20": "2.20.0",
    "2.21": "2.21.0",
}
# The minors the Makefile builds Horovod 0.28.1 against (README's install table: measured),
# and those of them whose CPU build needs hvdbench's patch (patches/; GPU builds get none).
HOROVOD_TF = ("2.14", "2.15", "2.16", "2.17", "2.18", "2.19", "2.20", "2.21")
HOROVOD_PATCHED_TF = ("2.19", "2.20", "2.21")
# TensorFlow's distributions, in the order looked up without importing it.
TF_DISTRIBUTIONS = ("tensorflow-cpu", "tensorflow", "tensorflow-intel", "tensorflow-macos")


class KerasError(UsageError):
    """Keras 3 is active where hvdbench needs Keras 2 (exit code 2, one line)."""


def needs_legacy_keras(tf_version: str | None) -> bool:
    """Whether TensorFlow ``tf_version`` needs ``TF_USE_LEGACY_KERAS=1`` for Keras 2: from
    2.16 on (and when the version is unknown). Not 2.15, whose own Keras is Keras 2: it
    reads the variable too, and then insists on the tf-keras package, which it does not
    need (measured: ``ImportError: Keras cannot be imported`` without it). 2.14 ignores it."""
    try:
        major, minor_ = (int(x) for x in (tf_version or "").split(".")[:2])
    except ValueError:
        return True
    return (major, minor_) >= KERAS3_FROM


def use_legacy_keras(
    env: MutableMapping[str, str] = os.environ, tf_version: str | None = None
) -> None:
    """Select Keras 2 (tf-keras) where TensorFlow needs it (:func:`needs_legacy_keras`),
    by the installed TensorFlow's version unless ``tf_version`` is given."""
    if needs_legacy_keras(tf_version or tensorflow_version()):
        env[LEGACY_KERAS_ENV] = "1"


def tensorflow_version() -> str | None:
    """The installed TensorFlow's version, from its distribution's metadata (no import)."""
    for name in TF_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def minor(version: str) -> str:
    """``2.18.1`` -> ``2.18``."""
    return ".".join(version.split(".")[:2])


def keras_info() -> dict[str, Any]:
    """The Keras behind ``tf.keras``: its version and flavour (``tf-keras``, ``keras 2``
    (TensorFlow <= 2.15's own) or ``keras 3``). Imports TensorFlow."""
    import tensorflow as tf

    package = tf.keras.layers.Dense.__module__.split(".")[0]  # tf_keras or keras
    version = metadata.version("tf-keras" if package == "tf_keras" else package)
    if package == "tf_keras":
        flavour = "tf-keras"
    elif version.startswith("2."):
        flavour = "keras 2"
    else:
        flavour = "keras 3"
    return {"version": version, "flavour": flavour}


def require_keras2() -> dict[str, Any]:
    """Keras 2 behind ``tf.keras``, or one line saying why this process cannot run."""
    if _legacy_flag_at_import() is False:
        raise KerasError(
            f"{_keras2_needed()}; TensorFlow was imported before {LEGACY_KERAS_ENV}=1 was set "
            f"(import hvdbench before tensorflow, or export {LEGACY_KERAS_ENV}=1)"
        )
    if _legacy_flag_at_import() and importlib.util.find_spec("tf_keras") is None:
        raise KerasError(f"{_keras2_needed()}; tf-keras is not installed")
    try:
        info = keras_info()
    except ImportError as e:  # e.g. TF_USE_LEGACY_KERAS=1 exported by hand on 2.15
        raise KerasError(f"tf.keras cannot be imported: {e}") from None
    if info["flavour"] == "keras 3":
        raise KerasError(f"{_keras2_needed()}; tf.keras is Keras {info['version']}")
    return info


def _keras2_needed() -> str:
    tf_version = tensorflow_version() or "?"
    return (
        "hvdbench needs the Keras 2 API (tf.compat.v1 graph modes, Horovod's gradient tape), "
        f"which TensorFlow {tf_version} gives only with {LEGACY_KERAS_ENV}=1 set before "
        f"TensorFlow's import and tf-keras~={minor(tf_version)}.0 installed "
        f"(make install TF={minor(tf_version)})"
    )


def _legacy_flag_at_import() -> bool | None:
    """Whether TensorFlow (>= 2.16) saw TF_USE_LEGACY_KERAS=1 at its import; None for an
    older TensorFlow, whose tf.keras is always Keras 2, or before TensorFlow's import."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not needs_legacy_keras(getattr(tf, "__version__", None)):
        return None  # 2.15 has the attribute too, but its tf.keras is Keras 2 either way
    seen = getattr(tf, "_tf_uses_legacy_keras", None)
    return None if seen is None else bool(seen)


def tensorboard_installed() -> bool:
    """Whether TensorBoard is importable here (``tf.summary`` writes through it). TensorFlow
    up to 2.19 requires it; 2.20 and newer do not install it, so ``make install`` does."""
    return importlib.util.find_spec("tensorboard") is not None


def require_tensorboard(key: str) -> None:
    """One line, before anything starts, when ``key`` (summary.dir) needs TensorBoard."""
    if tensorboard_installed():
        return
    tf_version = tensorflow_version() or "?"
    raise UsageError(
        f"{key}: TensorBoard summaries need the tensorboard package, which TensorFlow "
        f"{tf_version} does not install: pip install 'tensorboard~={minor(tf_version)}.0' "
        f"(make install TF={minor(tf_version)} does), or leave {key} empty"
    )


def horovod_installed() -> bool:
    """Whether Horovod is importable here (without importing it or TensorFlow)."""
    return importlib.util.find_spec("horovod") is not None


def require_horovod(other_modes: tuple[str, ...]) -> None:
    """One line, before TensorFlow's import, when this environment has no Horovod."""
    if horovod_installed():
        return
    tf_version = tensorflow_version()
    here = f"TensorFlow {tf_version}" if tf_version else "this environment"
    newest = HOROVOD_TF[-1]
    newest_gpu = [m for m in HOROVOD_TF if m not in HOROVOD_PATCHED_TF][-1]
    builds = (
        f"hvdbench does not build Horovod 0.28.1 against {here}"
        if tf_version and minor(tf_version) not in HOROVOD_TF
        else f"Horovod is not installed with {here}"
    )
    raise UsageError(
        f"mode.name: 'horovod' needs Horovod; {builds}. The newest TensorFlow Horovod builds "
        f"against is {TF_PINS[newest]}: make install TF={newest} (with GPU=1: "
        f"{TF_PINS[newest_gpu]}, TF={newest_gpu}). Modes that run here: "
        + ", ".join(other_modes)
        + " (parameter_server is the fallback for Horovod's data parallelism)"
    )


def main() -> int:
    """``make install``'s check: the installed TensorFlow, Keras and Horovod, or one
    line and exit code 2 if Keras 2 is not active."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    try:
        info = require_keras2()
    except KerasError as e:
        print(f"hvdbench: error: {e}", file=sys.stderr)
        return e.exit_code
    hvd = "installed" if horovod_installed() else "not installed"
    print(
        f"TensorFlow {tensorflow_version()}, Keras {info['version']} ({info['flavour']}), "
        f"Horovod {hvd}"
    )
    return 0
