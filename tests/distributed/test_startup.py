"""Slow start-up, for real: a rank that takes longer than 30 s to start (Horovod's Gloo
store and the heartbeat bound used to give up at 30 s) still joins within
launch.startup_timeout_s, and a rank that does not come within it ends the job with one
line naming the bound and that rank. The delay is hvdbench's testing aid
(launch.debug_startup_delay_rank), taken before TensorFlow's import, as a slow import
from a shared file system would be. srun + Gloo is in tests/multinode."""

from __future__ import annotations

import socket
import time

import pytest

from hvdbench.study import records
from tests.conftest import hvdbench

pytestmark = pytest.mark.distributed

SLOW_START_S = 35  # past Horovod's Gloo default (30 s) and fault.heartbeat_timeout_s (30 s)
COMMON = [
    "run",
    "--np",
    "2",
    "--model.name=mnist_mlp",
    "--train.num_warmup_steps=2",
    "--train.num_steps=10",
    "--train.display_every=5",
]


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_a_rank_slower_than_30_s_to_start_still_joins(tmp_path, launcher):
    out = tmp_path / "records"
    r = hvdbench(
        *COMMON,
        f"--launch.launcher={launcher}",
        "--launch.debug_startup_delay_rank=0",
        f"--launch.debug_startup_delay_s={SLOW_START_S}",
        f"--output.dir={out}",
        timeout=280,
    )
    assert not r.timed_out
    assert r.returncode == 0, r.output[-3000:]
    recs = records.load(out)
    assert len(recs) == 1 and recs[0]["status"] == "complete", r.output[-3000:]
    assert recs[0]["totals"]["num_ranks"] == 2
    assert recs[0]["config"]["launch"]["startup_timeout_s"] == 600.0  # the default


def test_a_rank_that_never_comes_ends_the_job_naming_the_bound_and_the_rank(tmp_path):
    bound = 30  # past TensorFlow's import on the slowest machine: only rank 0 is late
    out = tmp_path / "records"
    t0 = time.monotonic()
    r = hvdbench(
        *COMMON,
        "--launch.launcher=mpirun",
        f"--launch.startup_timeout_s={bound}",
        "--launch.debug_startup_delay_rank=0",
        "--launch.debug_startup_delay_s=600",
        f"--output.dir={out}",
        timeout=200,
    )
    took = time.monotonic() - t0
    assert not r.timed_out
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("hvdbench: error:")]
    assert errors == [
        f"hvdbench: error: rank 0 on host {socket.gethostname()}: start-up "
        f"not done after launch.startup_timeout_s={bound} s, still in its testing delay "
        "(launch.debug_startup_delay_s=600); aborting the job"
    ], r.stderr[-3000:]
    assert bound <= took < bound + 60, took
    assert not out.exists() or records.load(out) == []
