"""A real client: the `reframe` command runs reframe/hvdbench_checks.py against the tier's
own Slurm cluster (settings in tests/slurm/reframe_settings.py). Every case must pass, and
its performance report must hold hvdbench's figure, equal to the record's total.

Cheap on purpose: the trivial model, a few steps, 1-2 compute ranks, one job at a time
per case, everything ReFrame writes under tmp_path.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run
from tests.slurm.cluster import LocalSlurm
from tests.slurm.conftest import slurm_env

pytestmark = pytest.mark.slurm

CASES = {
    ("horovod", 2): "hvdbench_check%mode=horovod%ranks=2",
    ("parameter_server", 1): "hvdbench_check%mode=parameter_server%ranks=1",
}


def test_reframe_runs_the_checks_on_slurm(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    reframe = shutil.which("reframe", path=str(Path(sys.executable).parent))
    assert reframe, "reframe-hpc is in DEV_DEPS: make install"
    report = tmp_path / "report.json"
    cmd = [
        reframe,
        "-C", str(REPO / "tests/slurm/reframe_settings.py"),
        "-c", str(REPO / "reframe/hvdbench_checks.py"),
        "--system", "hvdslurm:debug",
        "--prefix", str(tmp_path / "rfm"),
        "--report-file", str(report),
        *[a for name in CASES.values() for a in ("-n", name)],
        "-S", f"python={sys.executable}",
        "-S", "num_steps=8",
        "-S", "num_warmup_steps=1",
        "-r",
    ]  # fmt: skip
    env = {**slurm_env(slurm_cluster), "TMPDIR": str(tmp_path)}  # ReFrame's own log too
    r = run(cmd, timeout=600, env=env, cwd=tmp_path)
    assert not r.timed_out, r.output[-4000:]
    assert r.returncode == 0, r.output[-6000:]
    cases = [tc for run_ in json.loads(report.read_text())["runs"] for tc in run_["testcases"]]
    assert len(cases) == len(CASES), [c["display_name"] for c in cases]
    perflog = (tmp_path / "rfm/perflogs/hvdslurm/debug/hvdbench_check.log").read_text()
    logged = [dict(zip(*[ln.split("|") for ln in (perflog.splitlines()[0], row)], strict=True))
              for row in perflog.splitlines()[1:]]  # fmt: skip
    for case in cases:
        assert case["result"] == "pass", case
        mode, ranks = case["mode"], case["ranks"]
        assert (mode, ranks) in CASES
        out = Path(case["outputdir"])
        records = sorted((out / "hvdbench-records").glob("*.json"))
        assert len(records) == 1, case["outputdir"]
        rec = json.loads(records[0].read_text())
        assert rec["status"] == "complete" and rec["mode"] == mode
        assert rec["totals"]["num_ranks"] == ranks
        # perfvalues: name -> [value, reference, lower, upper, unit, result]
        perf = {k.rsplit(":", 1)[1]: v for k, v in case["perfvalues"].items()}
        total, unit = perf["total_img_s"][0], perf["total_img_s"][4]
        # The figure ReFrame reports is the record's measured total (printed to 2 places).
        assert unit == "img/s" and total == round(rec["totals"]["total_images_per_sec"], 2)
        assert perf["per_device_img_s"][0] == round(rec["totals"]["per_device_images_per_sec"], 2)
        row = [x for x in logged if x["unique_name"] == case["unique_name"]]
        assert len(row) == 1 and float(row[0]["total_img_s_value"]) == total, perflog
        assert "total images/sec:" in (out / "rfm_job.out").read_text()
