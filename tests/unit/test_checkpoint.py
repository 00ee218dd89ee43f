"""Object-based checkpoints: resume at the saved global step; a corrupt newest checkpoint
falls back to the previous one with a warning."""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")

from hvdbench import config  # noqa: E402
from hvdbench.components import checkpoint  # noqa: E402


def make(tmp_path, value: float):
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    model.layers[0].kernel.assign(tf.fill((3, 2), value))
    cfg = config.load(None, [f"--checkpoint.dir={tmp_path}", "--checkpoint.every_steps=5"])
    return model, checkpoint.Checkpointer(cfg.checkpoint, {"model": model})


def test_save_by_steps_then_resume(tmp_path):
    model, ck = make(tmp_path, 1.0)
    assert ck.restore() == (0, None)
    for step in range(1, 13):
        model.layers[0].kernel.assign(tf.fill((3, 2), float(step)))
        ck.maybe_save(step)
    ck.save(12)
    assert ck.saved == ["ckpt-5", "ckpt-10", "ckpt-12"]
    model2, ck2 = make(tmp_path, -1.0)
    step, prefix = ck2.restore()
    assert step == 12 and prefix.endswith("ckpt-12")
    assert float(model2.layers[0].kernel[0, 0]) == 12.0


def test_corrupt_latest_falls_back_with_warning(tmp_path, capsys):
    model, ck = make(tmp_path, 0.0)
    for step in (5, 10):
        model.layers[0].kernel.assign(tf.fill((3, 2), float(step)))
        ck.save(step)
    data = next(tmp_path.glob("ckpt-10.data-*"))
    data.write_bytes(data.read_bytes()[:7])  # truncated
    model2, ck2 = make(tmp_path, -1.0)
    step, prefix = ck2.restore()
    assert step == 5 and prefix.endswith("ckpt-5")
    assert float(model2.layers[0].kernel[0, 0]) == 5.0
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "ckpt-10 is unreadable" in err
    # every checkpoint unreadable: a clear error rather than silently starting afresh
    (tmp_path / "ckpt-5.index").write_bytes(b"garbage")
    _, ck3 = make(tmp_path, -1.0)
    with pytest.raises(Exception, match=r"no checkpoint in .* can be read"):
        ck3.restore()


def test_save_by_seconds(tmp_path):
    import time

    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    cfg = config.load(None, [f"--checkpoint.dir={tmp_path}", "--checkpoint.every_seconds=0.3"])
    ck = checkpoint.Checkpointer(cfg.checkpoint, {"model": model})
    assert ck.maybe_save(1) is None  # the period has not elapsed yet
    time.sleep(0.35)
    assert ck.maybe_save(2).endswith("ckpt-2")
    assert ck.maybe_save(3) is None  # the clock restarted at the save
    assert [p.name for p in sorted(tmp_path.glob("*.index"))] == ["ckpt-2.index"]


def test_save_by_steps_when_the_global_step_jumps(tmp_path):
    """An async graph's global step moves by several per chief step: a save is due when a
    multiple of every_steps was crossed, not only when it is hit."""
    _, ck = make(tmp_path, 1.0)
    ck.restore()
    saved = [s for s in (2, 4, 7, 9, 11, 16, 17) if ck.maybe_save(s)]
    assert saved == [7, 11, 16]
