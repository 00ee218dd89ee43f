"""Keras 3 active anyway (TensorFlow imported before hvdbench set TF_USE_LEGACY_KERAS):
a run stops with one line. Only a TensorFlow of 2.16 or newer has Keras 3, so the unit tier
collects this directory there only (the Makefile's UNIT_TESTS)."""

from __future__ import annotations

import pytest

from hvdbench import tfcompat
from tests.unit.test_tfcompat import TF, TF_MINOR, python

pytestmark = pytest.mark.skipif(
    TF_MINOR < (2, 16),
    reason="tf.keras is Keras 2 before TensorFlow 2.16 (the unit tier collects tests/compat from 2.16 on)",
)


def test_keras_3_active_anyway_stops_a_run_with_one_line(tmp_path):
    # TensorFlow imported before hvdbench, without TF_USE_LEGACY_KERAS: Keras 3.
    out = python(
        "import sys, tensorflow; from hvdbench.cli import main; "
        f"sys.exit(main(['run', '--mode.name=replicated', '--model.name=trivial', "
        f"'--output.dir={tmp_path}', "
        "'--train.num_steps=1', '--train.num_warmup_steps=0']))"
    )
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [x for x in out.stderr.splitlines() if x.startswith("hvdbench:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("hvdbench: error: hvdbench needs the Keras 2 API")
    assert "TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set" in lines[0]
    assert f"make install TF={tfcompat.minor(TF)}" in lines[0]
    assert not list(tmp_path.glob("*.json"))
