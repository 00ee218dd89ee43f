"""Every mode learns real digits: the same `hvdbench run` (mnist_mlp, SGD, same seed,
bounded steps) in each of the six modes, on scikit-learn's handwritten digits written in
MNIST's layout (tests/digits.py), then `hvdbench eval` on the held-out split.

A mode that trained on anything but its shard of the real split (a synthetic batch, say)
shows a falling loss and chance accuracy here (~0.1), not the >= 0.9 asserted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests import digits
from tests.conftest import hvdbench
from tests.modes import bounded, two_ranks_each

pytestmark = pytest.mark.distributed

MIN_TOP_1 = 0.90
STEPS = 200  # 32 x 2 examples a step: about 8.5 epochs of the 1,497 training digits
TRAIN = [
    "--model.name=mnist_mlp",
    "--data.source=mnist",
    "--train.optimizer=sgd",
    "--train.learning_rate=0.1",
    "--train.per_device_batch_size=32",
    "--train.num_warmup_steps=0",
    f"--train.num_steps={STEPS}",
    "--train.display_every=50",
    "--train.seed=7",
]
MODES = {mode: [*flags, *bounded(mode)] for mode, flags in two_ranks_each().items()}


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    return digits.write_digits(tmp_path_factory.mktemp("digits"))


def one(directory: Path, kind: str) -> dict:
    found = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    (rec,) = [r for r in found if r.get("kind", "train") == kind]
    return rec


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_learns_the_digits(tmp_path, digits_dir, mode):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    t0 = time.monotonic()
    r = hvdbench(
        "run",
        *MODES[mode],
        *TRAIN,
        f"--data.dir={digits_dir}",
        f"--checkpoint.dir={ckpt}",
        f"--output.dir={out}",
        timeout=240,
    )
    assert not r.timed_out and r.returncode == 0, r.output[-3000:]
    rec = one(out, "train")
    assert rec["data"]["source"] == "mnist" and rec["data"]["num_examples"] == 1497
    details = rec["mode_details"]
    shards = details.get("input_shards") or [details.get("input_shard")]
    if mode in ("replicated", "independent"):
        assert shards == [[0, 2], [1, 2]]  # one shard per device
    elif mode != "horovod":
        assert shards == [[0, 2]]  # the chief's shard of two
    e = hvdbench(
        "eval",
        "--model.name=mnist_mlp",
        "--data.source=mnist",
        f"--data.dir={digits_dir}",
        f"--checkpoint.dir={ckpt}",
        f"--output.dir={out}",
        timeout=120,
    )
    assert e.returncode == 0, e.output[-3000:]
    ev = one(out, "eval")
    assert ev["data"]["split"] == "eval" and ev["eval"]["num_examples"] == 300
    top1 = ev["eval"]["top_1_accuracy"]
    print(
        f"{mode}: top-1 {top1:.4f} after {ev['global_step']} steps, {time.monotonic() - t0:.0f} s"
    )
    assert top1 >= MIN_TOP_1, f"{mode}: top-1 {top1:.3f} < {MIN_TOP_1} on the held-out digits"
