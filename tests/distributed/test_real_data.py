"""Real data, checkpoints, evaluation, TensorBoard and tracing, end to end through
`hvdbench run` / `hvdbench eval` as a user types them, on 1 and 2 ranks (horovodrun --gloo).

Every data set is generated small in its real on-disk format (tests/datagen.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hvdbench.launch import launcher
from tests import datagen
from tests.conftest import base_env, hvdbench, run

pytestmark = pytest.mark.distributed

TINY = [
    "--train.num_warmup_steps=2",
    "--train.num_steps=4",
    "--train.per_device_batch_size=8",
    "--train.display_every=2",
]


def records(out: Path, kind: str = "") -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    return [r for r in found if r.get("kind", "train") == (kind or "train")]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    datagen.write_cifar10(root / "cifar10", per_file=16, files=2, test=20)
    datagen.write_mnist(root / "mnist", train=40, test=20, gz=True)
    r = run(
        [
            sys.executable,
            "-c",
            f"from tests import datagen; datagen.write_imagenet({str(root / 'imagenet')!r})",
        ],
        timeout=120,
    )
    assert r.returncode == 0, r.output
    return {name: root / name for name in ("cifar10", "mnist", "imagenet")}


@pytest.mark.parametrize("np_", [1, 2])
@pytest.mark.parametrize(
    "source, model", [("cifar10", "trivial"), ("mnist", "mnist_mlp"), ("imagenet", "trivial")]
)
def test_run_on_each_format(tmp_path, datasets, source, model, np_):
    out = tmp_path / "out"
    r = hvdbench(
        "run",
        "--np",
        str(np_),
        f"--model.name={model}",
        f"--data.source={source}",
        f"--data.dir={datasets[source]}",
        f"--output.dir={out}",
        *TINY,
        timeout=240,
    )
    assert r.returncode == 0, r.output
    assert "total images/sec:" in r.stdout
    (rec,) = records(out)
    assert rec["topology"]["world_size"] == np_
    assert rec["data"]["source"] == source and rec["data"]["dir"] == str(datasets[source])
    assert rec["totals"]["total_images_per_sec"] > 0
    assert rec["global_step"] == 6


def test_compare_synthetic_records_both_step_times(tmp_path, datasets):
    out = tmp_path / "out"
    r = hvdbench(
        "run",
        "--np",
        "2",
        "--model.name=trivial",
        "--data.source=cifar10",
        f"--data.dir={datasets['cifar10']}",
        "--data.compare_synthetic=true",
        f"--output.dir={out}",
        *TINY,
        timeout=240,
    )
    assert r.returncode == 0, r.output
    assert "input pipeline: real" in r.stdout
    (rec,) = records(out)
    p = rec["input_pipeline"]
    assert p["real_step_time_mean"] > 0 and p["synthetic_step_time_mean"] > 0
    assert p["input_bound"] == (p["real_over_synthetic_step_time"] > 1.1)
    # warm-up, synthetic warm-up (the swapped input retraces the step), synthetic, real
    assert rec["global_step"] == 2 + 2 + 4 + 4


def test_learnable_cifar_reaches_accuracy_well_above_chance(tmp_path):
    data = datagen.write_cifar10(tmp_path / "c", per_file=100, files=5, test=200)
    common = [
        "--model.name=cifar10_cnn",
        "--model.image_size=16",
        "--data.source=cifar10",
        f"--data.dir={data}",
        f"--checkpoint.dir={tmp_path / 'ck'}",
        f"--output.dir={tmp_path / 'out'}",
    ]
    r = hvdbench(
        "run",
        *common,
        "--train.num_warmup_steps=0",
        "--train.num_steps=150",
        "--train.display_every=50",
        "--checkpoint.every_steps=50",
        timeout=240,
    )
    assert r.returncode == 0, r.output
    e = hvdbench("eval", *common, timeout=120)
    assert e.returncode == 0, e.output
    assert "Accuracy @ 1 = " in e.stdout and "[200 examples]" in e.stdout
    (ev,) = records(tmp_path / "out", "eval")
    assert ev["data"]["split"] == "eval" and ev["data"]["files"] == ["test_batch.bin"]
    assert ev["global_step"] == 150 and ev["checkpoint"].endswith("ckpt-150")
    assert ev["eval"]["num_examples"] == 200
    assert ev["eval"]["top_1_accuracy"] > 0.5  # chance is 0.1
    assert ev["eval"]["top_5_accuracy"] >= ev["eval"]["top_1_accuracy"]
    # the same checkpoint on images of pure noise with random labels: about chance, so the
    # accuracy above is the model's, not an artefact of the counting
    noise = datagen.write_cifar10(tmp_path / "n", per_file=1, files=1, test=200, learnable=False)
    common[3] = f"--data.dir={noise}"
    n = hvdbench("eval", *common, timeout=120)
    assert n.returncode == 0, n.output
    noise_eval = [r for r in records(tmp_path / "out", "eval") if r["data"]["dir"] == str(noise)]
    assert noise_eval[0]["eval"]["top_1_accuracy"] < 0.3
    tags = event_tags(tmp_path / "ck" / "eval")
    assert {"eval/top_1_accuracy", "eval/top_5_accuracy"} <= set(tags)
    assert tags["eval/top_1_accuracy"] == [150, 150]


def test_resume_continues_step_count_and_survives_corrupt_latest(tmp_path, datasets):
    ck = tmp_path / "ck"
    args = [
        "run",
        "--np",
        "2",
        "--model.name=mnist_mlp",
        "--data.source=mnist",
        f"--data.dir={datasets['mnist']}",
        f"--checkpoint.dir={ck}",
        "--checkpoint.every_steps=3",
        f"--output.dir={tmp_path / 'out'}",
        *TINY,
    ]
    first = hvdbench(*args, timeout=240)
    assert first.returncode == 0, first.output
    assert "starting at step 0" in first.stdout
    second = hvdbench(*args, timeout=240)
    assert second.returncode == 0, second.output
    assert "resumed from" in second.stdout and "at step 6" in second.stdout
    recs = sorted(records(tmp_path / "out"), key=lambda r: r["checkpoint"]["start_step"])
    assert [r["checkpoint"]["start_step"] for r in recs] == [0, 6]
    assert [r["global_step"] for r in recs] == [6, 12]
    assert recs[1]["checkpoint"]["saved"] == ["ckpt-9", "ckpt-12"]
    # damage the newest checkpoint: the next run warns and resumes from the one before
    data = next(ck.glob("ckpt-12.data-*"))
    data.write_bytes(b"\0" * 5)
    third = hvdbench(*args[:2], "1", *args[3:], timeout=240)
    assert third.returncode == 0, third.output
    assert "warning: checkpoint" in third.stderr and "ckpt-12 is unreadable" in third.stderr
    assert "resumed from" in third.stdout and "at step 9" in third.stdout


def event_tags(logdir: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return {t: [e.step for e in acc.Tensors(t)] for t in acc.Tags()["tensors"]}


def plugin_of(logdir: Path, tag: str) -> str:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc.SummaryMetadata(tag).plugin_data.plugin_name


def test_summaries_and_trace_from_chief_only(tmp_path, datasets):
    tb = tmp_path / "tb"
    r = hvdbench(
        "run",
        "--np",
        "2",
        "--model.name=trivial",
        "--data.source=cifar10",
        f"--data.dir={datasets['cifar10']}",
        f"--summary.dir={tb}",
        "--summary.every_steps=2",
        "--summary.verbosity=2",
        "--trace.steps=3,4",
        f"--output.dir={tmp_path / 'out'}",
        *TINY,
        timeout=240,
    )
    assert r.returncode == 0, r.output
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1  # the chief's only
    tags = event_tags(tb)
    for scalar in ("loss", "learning_rate", "images_per_sec"):
        assert tags[scalar] == [2, 4, 6], scalar
        assert plugin_of(tb, scalar) == "scalars"
    assert {"weights/fc1/kernel", "gradients/fc1/kernel", "gradients/logits/bias"} <= set(tags)
    assert plugin_of(tb, "gradients/fc1/kernel") == "histograms"
    # the profile TensorBoard's profiler opens: plugins/profile/<run>/<host>.xplane.pb
    (xplane,) = tb.glob("plugins/profile/*/*.xplane.pb")
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace.FromString(xplane.read_bytes())
    assert any(line.events for plane in space.planes for line in plane.lines)
    # Horovod's timeline for the same steps, with the gradients' all-reduces in it
    events = json.loads((tb / "horovod_timeline.json").read_text())  # closed by stop_timeline
    assert any("allreduce" in json.dumps(e).lower() for e in events)
    (rec,) = records(tmp_path / "out")
    assert rec["trace"] == {"dir": str(tb), "steps": [3, 4], "captured": True}


def test_download_chief_only_with_other_rank_waiting(tmp_path):
    """Under horovodrun -np 2, rank 0 downloads and rank 1 waits for its outcome."""
    from tests.unit.test_download import Server

    server = Server()
    try:
        archive = tmp_path / "a.tgz"
        md5 = datagen.cifar10_archive(archive)
        body = archive.read_bytes()
        server.routes["/good"] = (body, len(body))
        server.routes["/bad"] = (body[:-10] + b"0123456789", len(body))

        def job(path: str, dest: Path):
            cmd = launcher.horovodrun_command(
                2,
                [
                    sys.executable,
                    "-m",
                    "hvdbench",
                    "data",
                    "cifar10",
                    "--dest",
                    str(dest),
                    "--url",
                    server.url(path),
                    "--md5",
                    md5,
                ],
                controller="gloo",
            )
            return run(cmd, timeout=180, env=base_env())

        good = job("/good", tmp_path / "g")
        assert good.returncode == 0, good.output
        assert good.stdout.count("ready in") == 1  # printed by the chief only
        assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["cifar-10-batches-bin"]
        bad = job("/bad", tmp_path / "b")
        assert bad.returncode != 0
        assert "checksum mismatch" in bad.output and "the chief's download failed" in bad.output
        assert list((tmp_path / "b").iterdir()) == []
    finally:
        server.close()
