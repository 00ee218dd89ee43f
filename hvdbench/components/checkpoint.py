"""Object-based checkpoints: a ``tf.train.Checkpoint`` of the mode's objects and the global
step, saved by the chief every N steps and/or seconds, and resumed from.

Object-based checkpoints match variables by the path of object attributes (``model``,
``optimizer``, ``global_step``), not by graph names, so they work in eager and graph mode
alike and `hvdbench eval` can restore ``model`` whatever mode trained it. TensorFlow is
imported lazily, so that listing checkpoints stays cheap for the command line. A run whose
checkpoint directory already holds checkpoints continues from the newest one that reads
back whole; a corrupt newest checkpoint is skipped, with a warning, for the one before.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import time
from typing import Any

from hvdbench.config import CheckpointConfig
from hvdbench.errors import UsageError

PREFIX = "ckpt"


def candidates(directory: str) -> list[str]:
    """Checkpoint prefixes in ``directory``, newest (highest step) first.

    Listed from the ``.index`` files rather than the ``checkpoint`` state file, so that a
    damaged state file does not hide the checkpoints themselves.
    """
    found = []
    for index in glob.glob(os.path.join(directory, f"{PREFIX}-*.index")):
        m = re.fullmatch(rf"{PREFIX}-(\d+)\.index", os.path.basename(index))
        if m:
            found.append((int(m.group(1)), index[: -len(".index")]))
    return [p for _, p in sorted(found, reverse=True)]


def warn(text: str) -> None:
    print(f"hvdbench: warning: {text}", file=sys.stderr, flush=True)


def restore_latest(checkpoint: Any, directory: str) -> str | None:
    """Restore the newest readable checkpoint into ``checkpoint``; return its prefix.

    Every object given to ``checkpoint`` must be found in the file (extra objects in the
    file, such as an optimizer when only the model is wanted, are fine).
    """
    for prefix in candidates(directory):
        try:
            status = checkpoint.restore(prefix)
            status.assert_existing_objects_matched()
            status.expect_partial()
            return prefix
        # A damaged file fails in many ways (OpError, IndexError "Read less bytes than
        # requested", ValueError, AssertionError on a mismatch): all mean "unreadable".
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warn(f"checkpoint {prefix} is unreadable ({first[:200]}); trying the previous one")
    return None


class Checkpointer:
    """The chief's periodic saver, and the restore at start-up."""

    def __init__(
        self, cfg: CheckpointConfig, objects: dict[str, Any], write_dir: str | None = None
    ) -> None:
        """``write_dir``: where saves go, if not ``cfg.dir`` (a non-chief worker that must
        take part in every save writes to a scratch directory; it restores from ``cfg.dir``)."""
        import tensorflow as tf

        self.cfg = cfg
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.checkpoint = tf.train.Checkpoint(global_step=self.global_step, **objects)
        directory = write_dir or cfg.dir
        os.makedirs(directory, exist_ok=True)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            directory,
            max_to_keep=cfg.max_to_keep if write_dir is None else 1,
            checkpoint_name=PREFIX,
        )
        self.last_saved_step = -1
        self.last_save_time = time.monotonic()
        self.saved: list[str] = []

    def restore(self) -> tuple[int, str | None]:
        """Resume: (global step, prefix) of the newest readable checkpoint, or (0, None)."""
        prefix = restore_latest(self.checkpoint, self.cfg.dir)
        if prefix is None and candidates(self.cfg.dir):
            raise UsageError(
                f"checkpoint.dir: no checkpoint in {self.cfg.dir!r} can be read; move them "
                "away to start afresh"
            )
        step = int(self.global_step.numpy()) if prefix else 0
        self.last_saved_step = step
        return step, prefix

    def due(self, step: int) -> bool:
        """Whether a save is due at ``step``: it crossed a multiple of ``every_steps`` since
        the last save (steps may move by more than one, as an async graph's global step
        does), or ``every_seconds`` have elapsed."""
        every = self.cfg.every_steps
        by_steps = bool(every) and step // every > max(self.last_saved_step, 0) // every
        by_time = bool(self.cfg.every_seconds) and (
            time.monotonic() - self.last_save_time >= self.cfg.every_seconds
        )
        return by_steps or by_time

    def maybe_save(self, step: int) -> str | None:
        """Save at ``step`` if a step or time period has elapsed since the last save."""
        return self.save(step) if self.due(step) else None

    def save(self, step: int) -> str | None:
        """Save now, unless ``step`` is already saved."""
        if step == self.last_saved_step:
            return None
        self.global_step.assign(step)
        path = self.manager.save(checkpoint_number=step)
        self.last_saved_step = step
        self.last_save_time = time.monotonic()
        self.saved.append(os.path.basename(path))
        return str(path)

    @property
    def latest(self) -> str | None:
        """The newest checkpoint this manager knows of (saved or found on disk)."""
        return self.manager.latest_checkpoint
