"""A table of override lists (mode x data source x precision x XLA), in the manner of
torchtitan's integration tests: each supported cell trains briefly on real files and its
record says what ran; each cell a mode does not support exits 2 with its one line, before
any process starts, and writes no record."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from hvdbench import modes
from tests import datagen, digits
from tests.conftest import hvdbench, run
from tests.modes import bounded, two_ranks_each

pytestmark = pytest.mark.distributed

BRIEF = [
    "--train.num_warmup_steps=1",
    "--train.num_steps=3",
    "--train.per_device_batch_size=8",
]
# without mode.name
PROCS = {mode: [*flags[1:], *bounded(mode)] for mode, flags in two_ranks_each().items()}
MODEL = {"mnist": "mnist_mlp", "cifar10": "trivial", "imagenet": "trivial", "synthetic": "trivial"}

# (mode, data.source, train.mixed_precision, train.jit_compile, extra overrides): every
# mode on real data at least once, each data source and precision, XLA in each mode that
# supports it, the input comparison in each family of modes; kept to seven cells, which
# take about a minute and a half on the slow 2-core machine.
SUPPORTED = [
    ("horovod", "mnist", "bfloat16", True, []),
    ("parameter_server", "cifar10", "none", False, ["--data.compare_synthetic=true"]),
    ("parameter_server", "mnist", "none", False, ["--ps.staged_vars=true", "--ps.sync=false"]),
    ("distributed_replicated", "imagenet", "none", False, []),
    ("collective_all_reduce", "cifar10", "float16", True, ["--data.compare_synthetic=true"]),
    ("replicated", "imagenet", "bfloat16", True, []),
    ("independent", "mnist", "float16", True, ["--data.compare_synthetic=true"]),
]


def unsupported_cells() -> list[tuple[str, str, bool]]:
    """Every (mode, precision, jit) that a mode's declaration does not support."""
    out = []
    for mode, caps in modes.declared().items():
        for precision, jit in itertools.product(("none", "float16", "bfloat16"), (False, True)):
            if precision not in caps.precisions or (jit and not caps.jit_compile):
                out.append((mode, precision, jit))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    out = {
        "mnist": digits.write_digits(root / "mnist"),
        "cifar10": datagen.write_cifar10(root / "cifar10", per_file=16, files=5, test=16),
        "imagenet": root / "imagenet",
    }
    r = run(
        [
            sys.executable,
            "-c",
            f"from tests import datagen; datagen.write_imagenet({str(out['imagenet'])!r})",
        ],
        timeout=120,
    )
    assert r.returncode == 0, r.output
    return out


def overrides(
    mode: str, source: str, precision: str, jit: bool, data_dir: Path | None
) -> list[str]:
    args = [
        f"--mode.name={mode}",
        *PROCS[mode],
        f"--model.name={MODEL[source]}",
        f"--data.source={source}",
        f"--train.mixed_precision={precision}",
        f"--train.jit_compile={str(jit).lower()}",
        *BRIEF,
    ]
    return args + ([f"--data.dir={data_dir}"] if data_dir else [])


@pytest.mark.parametrize(
    "mode, source, precision, jit, extra",
    SUPPORTED,
    ids=[f"{m}-{s}-{p}-{'xla' if j else 'noxla'}" for m, s, p, j, _ in SUPPORTED],
)
def test_supported_cell_trains(tmp_path, data, mode, source, precision, jit, extra):
    out = tmp_path / "out"
    r = hvdbench(
        "run",
        *overrides(mode, source, precision, jit, data[source]),
        *extra,
        f"--output.dir={out}",
        timeout=240,
    )
    assert not r.timed_out and r.returncode == 0, r.output[-3000:]
    xla_word = "XLA requested (checked at the first step)" if jit else "XLA off"
    assert f"Precision:   {precision}; {xla_word}" in r.stdout
    (path,) = out.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "complete" and rec["mode"] == mode
    assert rec["data"]["source"] == source and rec["data"]["dir"] == str(data[source])
    train = rec["config"]["train"]
    assert (train["mixed_precision"], train["jit_compile"]) == (precision, jit)
    # what ran: XLA's own verdict on the step, on every rank
    assert (rec["xla"]["requested"], rec["xla"]["compiled"]) == (jit, jit), rec["xla"]
    assert ("XLA:         compiled: XLA compiled" in r.stdout) == jit
    assert rec["totals"]["total_images_per_sec"] > 0
    if "--data.compare_synthetic=true" in extra:
        p = rec["input_pipeline"]
        assert p["real_step_time_mean"] > 0 and p["synthetic_step_time_mean"] > 0


@pytest.mark.parametrize(
    "mode, precision, jit",
    unsupported_cells(),
    ids=[f"{m}-{p}-{'xla' if j else 'noxla'}" for m, p, j in unsupported_cells()],
)
def test_unsupported_cell_exits_2_with_one_line(tmp_path, data, mode, precision, jit):
    out = tmp_path / "out"
    r = hvdbench(
        "run",
        *overrides(mode, "mnist", precision, jit, data["mnist"]),
        f"--output.dir={out}",
        timeout=60,
    )
    assert r.returncode == 2, r.output[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    key = (
        "train.mixed_precision"
        if precision not in modes.declared()[mode].precisions
        else "train.jit_compile"
    )
    assert (
        lines[0].startswith(f"hvdbench: error: {key}: ")
        and f"by mode {mode}; it supports" in lines[0]
    )
    assert not out.exists() or list(out.iterdir()) == []
