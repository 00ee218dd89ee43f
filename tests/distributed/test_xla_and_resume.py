"""What ran, not what was asked: XLA's own verdict on the step in the record and the
banner, and the config's learning rate in a run resumed from a checkpoint.

XLA: with train.jit_compile the record's ``xla.compiled`` comes from the modules XLA's
compiler dumped during the first step (hvdbench.components.xla); without it the record
says compiled=false. A run whose XLA compiled nothing of the step (here: a dump filter of
the user's that lets no module through, so the proof is missing) stops with its one-line
error instead of recording non-XLA numbers under an XLA config.

Learning rate: Keras keeps it in an optimizer variable that the checkpoint restores; a
resumed run must train at train.learning_rate, as the banner says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import base_env, hvdbench
from tests.modes import two_ranks_each

pytestmark = pytest.mark.distributed

TINY = [
    "--model.name=mnist_mlp",
    "--train.per_device_batch_size=8",
    "--train.num_warmup_steps=1",
    "--train.num_steps=3",
    "--train.display_every=1",
]
XLA_MODES = {
    **two_ranks_each("collective_all_reduce", "replicated", "independent"),
    "horovod": ["--mode.name=horovod", "--np", "1"],
}


def record(out: Path) -> dict:
    (rec,) = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    return rec


def ok(r) -> None:
    assert not r.timed_out and r.returncode == 0, r.output[-3000:]


@pytest.mark.parametrize("mode", list(XLA_MODES))
def test_the_record_says_xla_compiled_the_step(tmp_path, mode):
    r = hvdbench(
        "run",
        *XLA_MODES[mode],
        *TINY,
        "--train.jit_compile=true",
        f"--output.dir={tmp_path}",
        timeout=240,
    )
    ok(r)
    rec = record(tmp_path)
    x = rec["xla"]
    print(f"{mode}: {x}")
    assert x["requested"] and x["compiled"], x
    assert x["modules"] and all("hvdbench_xla_pass" in m for m in x["modules"]), x
    assert "XLA requested (checked at the first step)" in r.stdout
    assert "XLA:         compiled: XLA compiled" in r.stdout
    assert "XLA on" not in r.stdout
    assert all(p["xla"]["compiled"] for p in rec["per_rank"])
    assert x["ranks_compiled"] == x["ranks"] == len(rec["per_rank"])


def test_without_jit_the_record_says_not_compiled(tmp_path):
    r = hvdbench("run", *XLA_MODES["horovod"], *TINY, f"--output.dir={tmp_path}", timeout=240)
    ok(r)
    x = record(tmp_path)["xla"]
    assert x["requested"] is False and x["compiled"] is False and x["modules"] == [], x
    assert "XLA off" in r.stdout and "XLA:  " not in r.stdout


def test_xla_requested_without_proof_stops_the_run(tmp_path):
    # the user's dump filter lets no module through: XLA compiles, but leaves no proof
    env = base_env({"XLA_FLAGS": "--xla_dump_hlo_module_re=^no_such_module$"})
    r = hvdbench(
        "run",
        *XLA_MODES["horovod"],
        *TINY,
        "--train.jit_compile=true",
        f"--output.dir={tmp_path}",
        timeout=240,
        env=env,
    )
    assert not r.timed_out and r.returncode != 0, r.output[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("hvdbench: error:")]
    print(errors)
    assert len(errors) == 1 and "train.jit_compile" in errors[0], r.stderr[-3000:]
    assert "ran without XLA" in errors[0]
    rec = record(tmp_path)
    assert rec["status"] == "incomplete" and "NotCompiledError" in rec["error"]


RESUME_MODES = two_ranks_each("horovod", "collective_all_reduce", "replicated", "independent")


def saved_learning_rates(ckpt: Path) -> dict[str, float]:
    """Every learning-rate variable in the newest checkpoint of ``ckpt``."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpt)))
    return {
        k: float(reader.get_tensor(k))
        for k in reader.get_variable_to_shape_map()
        if "learning_rate" in k and k.endswith("VARIABLE_VALUE")
    }


@pytest.mark.parametrize("mode", list(RESUME_MODES))
def test_a_resumed_run_trains_at_the_configs_learning_rate(tmp_path, mode):
    ckpt = tmp_path / "ckpt"
    common = [*RESUME_MODES[mode], *TINY, f"--checkpoint.dir={ckpt}"]
    ok(
        hvdbench(
            "run",
            *common,
            "--train.learning_rate=0.1",
            f"--output.dir={tmp_path / 'a'}",
            timeout=240,
        )
    )
    first = saved_learning_rates(ckpt)
    assert first and all(v == pytest.approx(0.1) for v in first.values()), first
    r = hvdbench(
        "run", *common, "--train.learning_rate=0.02", f"--output.dir={tmp_path / 'b'}", timeout=240
    )
    ok(r)
    assert "learning rate 0.02 (train.learning_rate), not the checkpoint's 0.1" in r.stdout
    rec = record(tmp_path / "b")
    assert rec["checkpoint"]["restored_from"] and rec["checkpoint"]["start_step"] == 4
    assert rec["learning_rate_in_effect"] == pytest.approx(0.02)
    after = saved_learning_rates(ckpt)  # saved from the optimizers at the end of run 2
    print(f"{mode}: learning rates saved by the first run {first}, by the resumed run {after}")
    assert after.keys() == first.keys() and all(v == pytest.approx(0.02) for v in after.values())
