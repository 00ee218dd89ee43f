"""The chief's checkpoint on a stop signal (RunHooks.finish(stopped=True)): where it goes,
and what the record says when a mode cannot save one. Real TensorFlow checkpoints of a tiny
Keras model; the multi-rank path is in tests/distributed/test_stop_signal.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hvdbench import config
from hvdbench.run.hooks import RunHooks


class _Mode:
    """The few Mode members RunHooks uses (an eager mode's defaults)."""

    checkpoint_on_every_worker = False

    def __init__(self, objects: dict[str, Any] | None, chief: bool = True) -> None:
        self.objects = objects
        self.is_chief = chief
        self.num_workers = 1

    def checkpoint_objects(self) -> dict[str, Any]:
        if self.objects is None:
            raise AttributeError("no model")
        return self.objects

    def before_checkpoint(self) -> int | None:
        return None


def _hooks(tmp_path: Path, mode: _Mode, *overrides: str) -> RunHooks:
    cfg = config.load(None, [f"--output.dir={tmp_path}", *overrides])
    hooks = RunHooks(cfg, mode)  # type: ignore[arg-type]
    hooks.global_step = 7
    return hooks


def _model() -> dict[str, Any]:
    import tensorflow as tf

    return {"model": tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])}


def test_without_checkpoint_dir_the_stop_checkpoint_goes_beside_the_record(tmp_path):
    hooks = _hooks(tmp_path, _Mode(_model()))
    hooks.finish(stopped=True, stop_dir=tmp_path / "rec.ckpt")
    assert hooks.stop_checkpoint == {
        "dir": str(tmp_path / "rec.ckpt"),
        "path": str(tmp_path / "rec.ckpt" / "ckpt-7"),
        "global_step": 7,
    }
    assert (tmp_path / "rec.ckpt" / "ckpt-7.index").is_file()


def test_with_checkpoint_dir_the_stop_checkpoint_goes_there(tmp_path):
    hooks = _hooks(tmp_path, _Mode(_model()), f"--checkpoint.dir={tmp_path / 'c'}")
    hooks.finish(stopped=True, stop_dir=tmp_path / "rec.ckpt")
    assert hooks.stop_checkpoint is not None
    assert hooks.stop_checkpoint["path"] == str(tmp_path / "c" / "ckpt-7")
    assert not (tmp_path / "rec.ckpt").exists()


def test_switched_off_or_not_stopped_or_not_chief_saves_nothing(tmp_path):
    for hooks, stopped in [
        (_hooks(tmp_path, _Mode(_model()), "--stop.checkpoint=false"), True),
        (_hooks(tmp_path, _Mode(_model())), False),
        (_hooks(tmp_path, _Mode(_model(), chief=False)), True),
    ]:
        hooks.finish(stopped=stopped, stop_dir=tmp_path / "rec.ckpt")
        assert hooks.stop_checkpoint is None
    assert not (tmp_path / "rec.ckpt").exists()


def test_a_mode_without_checkpoints_is_named_in_the_record(tmp_path):
    hooks = _hooks(tmp_path, _Mode(None), "--mode.name=parameter_server")
    hooks.finish(stopped=True, stop_dir=tmp_path / "rec.ckpt")
    assert hooks.stop_checkpoint == {
        "path": None,
        "error": "mode parameter_server does not save checkpoints",
    }


def test_a_failed_save_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    hooks = _hooks(tmp_path, _Mode(_model()))
    hooks.finish(stopped=True, stop_dir=blocker / "rec.ckpt")
    assert hooks.stop_checkpoint is not None and hooks.stop_checkpoint["path"] is None
    assert "checkpoint on stop failed" in hooks.stop_checkpoint["error"]
