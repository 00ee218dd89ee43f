"""Checkpoints, resume, TensorBoard summaries and tracing in the graph modes and the
tf.distribute modes, end to end through `hvdbench run` / `hvdbench eval`.

One parameter-server run (sync, 2 workers, 1 ps) with checkpoints, summaries at verbosity 2
and a trace is shared by the tests that read what it wrote; the other runs resume from a
copy of its checkpoints, so every graph variant is shown to read the same format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import hvdbench
from tests.distributed.cluster_helpers import leftover
from tests.distributed.test_real_data import event_tags, plugin_of
from tests.modes import bounded_args

pytestmark = pytest.mark.distributed

TINY = [
    "--model.name=mnist_mlp",
    "--train.per_device_batch_size=8",
    "--train.num_warmup_steps=2",
    "--train.num_steps=6",
    "--train.display_every=2",
]


def train(out: Path, *args: str, timeout: float = 240):
    r = hvdbench("run", f"--output.dir={out}", *TINY, *args, *bounded_args(args), timeout=timeout)
    assert not r.timed_out, r.output[-3000:]
    assert r.returncode == 0, r.output[-3000:]
    assert "Traceback" not in r.output, r.output[-3000:]
    assert leftover(str(out)) == []
    return r


def train_records(out: Path) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    return [r for r in found if r.get("kind", "train") == "train"]


def checkpoint_steps(ck: Path) -> list[int]:
    return sorted(int(p.name[len("ckpt-") : -len(".index")]) for p in ck.glob("ckpt-*.index"))


@pytest.fixture(scope="module")
def ps_run(tmp_path_factory) -> dict:
    """A sync parameter-server run that checkpoints every 2 global steps, writes summaries
    every 2 at verbosity 2, and traces its local steps 3-4."""
    root = tmp_path_factory.mktemp("ps")
    r = train(
        root / "out",
        "--mode.name=parameter_server",
        "--np",
        "2",
        f"--checkpoint.dir={root / 'ck'}",
        "--checkpoint.every_steps=2",
        f"--summary.dir={root / 'tb'}",
        "--summary.every_steps=2",
        "--summary.verbosity=2",
        "--trace.steps=3,4",
    )
    (rec,) = train_records(root / "out")
    return {"root": root, "stdout": r.stdout, "record": rec}


def test_ps_run_writes_periodic_and_final_checkpoints(ps_run):
    rec, ck = ps_run["record"], ps_run["root"] / "ck"
    assert "starting at step 0" in ps_run["stdout"]
    steps = checkpoint_steps(ck)
    saved = rec["checkpoint"]["saved"]
    assert saved == [f"ckpt-{s}" for s in steps] and len(saved) >= 3, saved
    # the final save is at the global step the run ended on, as the graph counts it
    final = rec["mode_details"]["final_global_step"]
    assert steps[-1] == rec["global_step"] and final - 1 <= steps[-1] <= final
    assert rec["checkpoint"]["restored_from"] is None


def test_ps_run_event_files_hold_the_expected_tags(ps_run):
    tb = ps_run["root"] / "tb"
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1  # the chief's only
    tags = event_tags(tb)
    for scalar in ("loss", "learning_rate", "images_per_sec"):
        assert len(tags[scalar]) >= 3, (scalar, tags[scalar])
        assert plugin_of(tb, scalar) == "scalars"
    assert {"weights/hidden/kernel", "gradients/hidden/kernel", "gradients/logits/bias"} <= set(
        tags
    )
    assert plugin_of(tb, "gradients/hidden/kernel") == "histograms"
    (xplane,) = tb.glob("plugins/profile/*/*.xplane.pb")
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace.FromString(xplane.read_bytes())
    assert any(line.events for plane in space.planes for line in plane.lines)
    assert ps_run["record"]["trace"]["captured"] is True


def test_ps_run_writes_each_workers_step_timelines_across_tasks(ps_run):
    """trace.steps in a gRPC mode: every worker writes the session's trace of each traced
    step, with the ops its step ran on the ps task as well as on itself."""
    tb = ps_run["root"] / "tb"
    names = sorted(p.name for p in tb.glob("timeline-*.json"))
    assert names == [f"timeline-worker{w}-step{s}.json" for w in (0, 1) for s in (3, 4)]
    for w in (0, 1):
        events = json.loads((tb / f"timeline-worker{w}-step3.json").read_text())["traceEvents"]
        devices = {e["args"]["name"] for e in events if e.get("name") == "process_name"}
        assert any(f"/job:worker/replica:0/task:{w}/" in d for d in devices), devices
        assert any("/job:ps/" in d for d in devices), devices
        ops = {e["args"].get("op") for e in events if e.get("ph") == "X"}
        assert {"RecvTensor", "BiasAddGrad"} <= ops, sorted(o for o in ops if o)


def test_eval_reads_a_checkpoint_written_by_a_ps_run(ps_run):
    root = ps_run["root"]
    e = hvdbench(
        "eval",
        "--model.name=mnist_mlp",
        f"--checkpoint.dir={root / 'ck'}",
        f"--output.dir={root / 'eval'}",
        timeout=120,
    )
    assert e.returncode == 0, e.output[-3000:]
    last = checkpoint_steps(root / "ck")[-1]
    assert f"ckpt-{last} (global step {last})" in e.stdout
    assert "Accuracy @ 1 = " in e.stdout


def test_ps_resume_continues_the_step_count_past_a_corrupt_latest(ps_run, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(ps_run["root"] / "ck", ck)
    steps = checkpoint_steps(ck)
    next(ck.glob(f"ckpt-{steps[-1]}.data-*")).write_bytes(b"\0" * 5)  # damage the newest
    r = train(
        tmp_path / "out",
        "--mode.name=parameter_server",
        "--np",
        "2",
        f"--checkpoint.dir={ck}",
        "--checkpoint.every_steps=3",
    )
    assert f"ckpt-{steps[-1]} is unreadable" in r.stderr
    assert f"resumed from {ck}/ckpt-{steps[-2]} at step {steps[-2]}" in r.stdout
    (rec,) = train_records(tmp_path / "out")
    assert rec["checkpoint"]["start_step"] == steps[-2]
    chief = rec["mode_details"]["workers"][0]["global_steps_seen"]
    # sync steps whose gradients came too late are dropped: the count moves on, by how
    # much depends on the timing
    assert chief[0] >= steps[-2] and rec["global_step"] > steps[-2] + 2
    # the weights came back too: the first loss is the trained model's, not a fresh one's
    first = ps_run["record"]["chief_losses"]
    assert rec["chief_losses"][0] < first[0] - 0.2, (rec["chief_losses"], first)


@pytest.mark.parametrize(
    "variant",
    [
        ["--mode.name=distributed_replicated"],
        ["--mode.name=parameter_server", "--ps.sync=false", "--ps.staged_vars=true"],
    ],
    ids=["distributed_replicated", "ps-async-staged"],
)
def test_other_graph_variants_resume_the_same_checkpoints(ps_run, tmp_path, variant):
    ck = tmp_path / "ck"
    shutil.copytree(ps_run["root"] / "ck", ck)
    last = checkpoint_steps(ck)[-1]
    r = train(
        tmp_path / "out",
        *variant,
        "--np",
        "2",
        f"--checkpoint.dir={ck}",
        f"--summary.dir={tmp_path / 'tb'}",
        "--summary.every_steps=2",
    )
    assert f"at step {last}" in r.stdout
    (rec,) = train_records(tmp_path / "out")
    assert rec["checkpoint"]["start_step"] == last
    assert rec["global_step"] > last and checkpoint_steps(ck)[-1] == rec["global_step"]
    tags = event_tags(tmp_path / "tb")
    assert {"loss", "learning_rate", "images_per_sec"} <= set(tags)
    assert all(s > last for s in tags["loss"])


@pytest.mark.parametrize("mode", ["collective_all_reduce", "replicated"])
def test_tf_distribute_resume_continues_the_step_count(tmp_path, mode):
    ck, tb = tmp_path / "ck", tmp_path / "tb"
    args = [
        f"--mode.name={mode}",
        *(["--np", "2"] if mode == "collective_all_reduce" else []),
        f"--checkpoint.dir={ck}",
        "--checkpoint.every_steps=3",
        f"--summary.dir={tb}",
        "--summary.every_steps=2",
        "--summary.verbosity=2",
    ]
    first = train(tmp_path / "out1", *args, "--trace.steps=3,4")
    assert "starting at step 0" in first.stdout
    assert checkpoint_steps(ck) == [3, 6, 8]
    second = train(tmp_path / "out2", *args)
    assert f"resumed from {ck}/ckpt-8 at step 8" in second.stdout
    (rec,) = train_records(tmp_path / "out2")
    assert rec["checkpoint"]["start_step"] == 8 and rec["global_step"] == 16
    assert rec["checkpoint"]["saved"] == ["ckpt-9", "ckpt-12", "ckpt-15", "ckpt-16"]
    (rec1,) = train_records(tmp_path / "out1")
    assert rec["chief_losses"][0] < rec1["chief_losses"][0] - 0.2
    tags = event_tags(tb)
    assert tags["loss"] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert {
        "learning_rate",
        "images_per_sec",
        "weights/hidden/kernel",
        "gradients/hidden/kernel",
    } <= (set(tags))
    assert len(list(tb.glob("plugins/profile/*/*.xplane.pb"))) == 1
    assert not list(Path("/tmp").glob("hvdbench-ckpt-*"))  # scratch saves cleaned up


@pytest.mark.parametrize(
    "variant",
    [
        ["--mode.name=parameter_server", "--ps.sync=true"],
        ["--mode.name=distributed_replicated"],
        ["--mode.name=parameter_server", "--ps.sync=false", "--ps.staged_vars=true"],
    ],
    ids=["ps-sync", "distributed_replicated", "ps-async-staged"],
)
def test_batch_norm_statistics_are_trained_on_the_ps(tmp_path, variant):
    """What a checkpoint of the ps variables holds is what `hvdbench eval` normalises with.
    The modes that compute on a local copy (distributed_replicated, staged variables) once
    updated only the copy's moving averages and saved the ps's untouched: mean 0 and
    variance 1 in every layer, so eval normalised with statistics no step had seen."""
    import numpy as np
    import tensorflow as tf

    ck = tmp_path / "ck"
    r = hvdbench(
        "run",
        *variant,
        "--np",
        "2",
        "--model.name=resnet20",
        "--train.per_device_batch_size=4",
        "--train.num_warmup_steps=0",
        "--train.num_steps=3",
        "--ps.idle_timeout_s=60",
        f"--checkpoint.dir={ck}",
        f"--output.dir={tmp_path / 'out'}",
        timeout=240,
    )
    assert not r.timed_out and r.returncode == 0, r.output[-3000:]
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ck)))
    names = [n for n in reader.get_variable_to_shape_map() if "OPTIMIZER_SLOT" not in n]
    means = [n for n in names if "moving_mean" in n]
    variances = [n for n in names if "moving_variance" in n]
    assert len(means) == len(variances) == 21, sorted(names)  # resnet20's batch norms
    untrained = [n for n in means if np.abs(reader.get_tensor(n)).max() < 1e-4]
    untrained += [n for n in variances if np.abs(reader.get_tensor(n) - 1).max() < 1e-4]
    assert untrained == []
