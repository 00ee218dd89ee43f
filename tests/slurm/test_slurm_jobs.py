"""The project's sbatch scripts, `hvdbench submit` and `hvdbench sweep --launcher slurm`
through a real local Slurm, with the records they leave.

All jobs are submitted at once by a module fixture (the node declares 8 CPUs), so the tier
takes about as long as its slowest job; each test then waits, bounded, for its own job.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hvdbench.study import records
from tests.conftest import hvdbench, run
from tests.distributed.cluster_helpers import leftover
from tests.slurm.cluster import LocalSlurm
from tests.slurm.conftest import slurm_env, wait_for_job, wait_for_text

pytestmark = pytest.mark.slurm

JOB_TIMEOUT = 240  # s, per job, from the time the test starts waiting
CONFIG = """\
[model]
name = "trivial"
[train]
per_device_batch_size = 8
num_warmup_steps = 2
num_steps = 20
display_every = 10
[output]
dir = "{out}"
"""

PROBE = r"""#!/bin/bash
# Which launchers start MPI ranks here, and what SLURM_STEP_ID each kind of process sees.
# Each process writes its own file (ranks printing at once can interleave on one line).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
P="$HVDBENCH_PYTHON"
SNIP='import json, os; from mpi4py import MPI; from hvdbench.launch import topology as t
c = MPI.COMM_WORLD; d = t.detect(os.environ); how = os.environ["HOW"]
open(f"probe-{how}-{c.Get_rank()}.json", "w").write(json.dumps({"how": how,
  "rank": c.Get_rank(), "size": c.Get_size(), "sum": c.allreduce(1),
  "step_id": os.environ.get("SLURM_STEP_ID"), "in_srun_step": t.in_srun_step(os.environ),
  "topo": [d.rank, d.size, d.source]}))'
"$P" -c 'import json, os; from hvdbench.launch import topology as t
open("probe-batch.json", "w").write(json.dumps({"how": "batch",
  "step_id": os.environ.get("SLURM_STEP_ID"), "in_srun_step": t.in_srun_step(os.environ),
  "source": t.detect(os.environ).source}))'
HOW=srun-pmix srun --mpi=pmix -n 2 "$P" -c "$SNIP"
HOW=mpirun mpirun -np 2 "$P" -c "$SNIP"
"""


def _submit_line(out: str) -> str:
    m = re.search(r"submitted job (\d+)", out)
    assert m, out
    return m.group(1)


class Jobs:
    def __init__(self, cluster: LocalSlurm, root: Path) -> None:
        self.cluster = cluster
        self.root = root
        self.env = slurm_env(cluster)
        self.ids: dict[str, str] = {}
        self.dirs: dict[str, Path] = {}

    def folder(self, name: str) -> Path:
        d = self.root / name
        (d / "records").mkdir(parents=True)
        (d / "config.toml").write_text(CONFIG.format(out=d / "records"))
        self.dirs[name] = d
        return d

    def submit(self, name: str, *args: str) -> None:
        d = self.folder(name)
        r = hvdbench("submit", str(d / "config.toml"), *args, env=self.env, cwd=d, timeout=60)
        assert r.returncode == 0, r.output
        self.ids[name] = _submit_line(r.stdout)

    def sbatch(self, name: str, script: str, *args: str) -> None:
        d = self.folder(name)
        (d / "job.sh").write_text(script)
        r = run(["sbatch", "--parsable", *args, str(d / "job.sh")], env=self.env, cwd=d,
                timeout=60)  # fmt: skip
        assert r.returncode == 0, r.output
        self.ids[name] = r.stdout.strip().split(";")[0]

    def output(self, name: str) -> Path:
        return self.dirs[name] / f"slurm-{self.ids[name]}.out"

    def wait(self, name: str) -> dict[str, str]:
        fields = wait_for_job(self.cluster, self.ids[name], JOB_TIMEOUT)
        return fields

    def records(self, name: str, sub: str = "records") -> list[dict[str, Any]]:
        return records.load(self.dirs[name] / sub)

    def log(self, name: str) -> str:
        p = self.output(name)
        return p.read_text(errors="replace") if p.exists() else f"(no {p.name})"


@pytest.fixture(scope="module")
def jobs(slurm_cluster: LocalSlurm, tmp_path_factory: pytest.TempPathFactory) -> Jobs:
    j = Jobs(slurm_cluster, tmp_path_factory.mktemp("jobs"))
    j.sbatch("probe", PROBE, "--ntasks=2")
    j.submit("srun", "--nodes", "1", "--ntasks-per-node", "2", "--time", "5")
    # A real --signal, SIGTERM as at a time limit or a preemption: Slurm's controller checks
    # every 30 s and may signal up to 60 s early, so TERM@60 before a 2-minute limit comes
    # 30-60 s after the start, well after start-up, and well before the limit; the run
    # would otherwise go on for a million steps. (SIGUSR1 is covered by mpirun_scancel.)
    j.submit(
        "real_signal", "--nodes", "1", "--ntasks-per-node", "2", "--time", "2",
        "--signal", "TERM@60", "--train.num_steps=1000000", "--stop.check_every=2",
        "--train.display_every=100000",
    )  # fmt: skip
    j.submit(
        "mpirun_scancel", "--launcher", "mpirun", "--nodes", "1", "--ntasks-per-node", "2",
        "--time", "4", "--train.num_steps=1000000", "--stop.check_every=2",
        "--train.display_every=100000",
    )  # fmt: skip
    d = j.folder("sweep")
    r = hvdbench(
        "sweep", str(d / "config.toml"), "--ranks", "1,2", "--launcher", "slurm",
        "--ntasks-per-node", "2", "--time", "5", "--study", str(d / "study"),
        "--point-timeout", "200", env=j.env, cwd=d, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.output
    j.ids["sweep"] = _submit_line(r.stdout)
    # 1 ps + 2 workers, roles from SLURM_PROCID, addresses exchanged through PMIx.
    j.submit("ps", "--nodes", "1", "--ntasks-per-node", "3", "--time", "5",
             "--mode.name=parameter_server", "--launch.np=2")  # fmt: skip
    return j


def _settled_leftover(marker: str, grace: float = 15) -> list[str]:
    """Processes still mentioning ``marker``, after a short grace for the step daemons
    to reap what they started (the job's state can change a moment before)."""
    deadline = time.monotonic() + grace
    while (left := leftover(marker)) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def _check_complete_record(rec: dict[str, Any], job: str, world: int) -> None:
    assert rec["status"] == "complete"
    assert rec["topology"]["world_size"] == world
    assert rec["totals"]["num_ranks"] == world
    assert rec["totals"]["total_images_per_sec"] > 0
    assert rec["totals"]["num_steps"] == 20
    assert rec["slurm"]["job_id"] == job
    assert rec["slurm"]["nodes"] == [rec["topology"]["hosts"][0]]
    assert rec["slurm"]["node_list"]
    assert rec["environment"]["SLURM_JOB_ID"] == job


def test_launchers_start_mpi_ranks_and_step_ids(jobs: Jobs) -> None:
    """srun --mpi=pmix and mpirun inside an allocation both start 2 MPI ranks; the batch
    step has no SLURM_STEP_ID, srun steps have a numeric one, and mpirun's ranks (forked
    locally by mpirun in the batch step) inherit the batch step's environment."""
    fields = jobs.wait("probe")
    out = jobs.log("probe")
    assert fields["JobState"] == "COMPLETED", out
    lines = [json.loads(p.read_text()) for p in sorted(jobs.dirs["probe"].glob("probe-*.json"))]
    batch = [x for x in lines if x["how"] == "batch"]
    assert batch == [{"how": "batch", "step_id": None, "in_srun_step": False, "source": "single"}]
    for how, source in (("srun-pmix", "pmix"), ("mpirun", "openmpi")):
        ranks = sorted((x for x in lines if x["how"] == how), key=lambda x: x["rank"])
        assert [x["rank"] for x in ranks] == [0, 1], out
        assert all(x["size"] == 2 and x["sum"] == 2 for x in ranks), out
        assert [x["topo"] for x in ranks] == [[0, 2, source], [1, 2, source]], out
        if how == "srun-pmix":
            assert all(x["step_id"].isdigit() and x["in_srun_step"] for x in ranks), out
        else:
            assert all(x["step_id"] is None and not x["in_srun_step"] for x in ranks), out


def test_horovod_srun_script_via_submit(jobs: Jobs) -> None:
    fields = jobs.wait("srun")
    assert fields["JobState"] == "COMPLETED", jobs.log("srun")
    assert fields["ExitCode"] == "0:0"
    recs = jobs.records("srun")
    assert len(recs) == 1, jobs.log("srun")
    _check_complete_record(recs[0], jobs.ids["srun"], 2)
    assert recs[0]["slurm"]["step_id"].isdigit()  # written from inside the srun step
    assert recs[0]["mode_details"]["controller"] == "mpi"


def test_real_slurm_signal_stops_all_ranks_together(jobs: Jobs) -> None:
    """sbatch --signal=TERM@60: every task gets SIGTERM before the time limit; the ranks
    stop after the same step, the chief writes the record (incomplete, with the steps
    done) and a checkpoint, and the job ends with 128 + SIGTERM, not by the time limit."""
    fields = jobs.wait("real_signal")
    log = jobs.log("real_signal")
    assert fields["JobState"] == "FAILED", (fields, log)  # non-zero exit, not TIMEOUT
    assert fields["ExitCode"] == "143:0", (fields, log)  # 128 + SIGTERM
    recs = jobs.records("real_signal")
    assert len(recs) == 1, log
    rec = recs[0]
    assert rec["status"] == "incomplete"
    stop = rec["stop"]
    assert stop["signal"] == "SIGTERM" and stop["stopped_early"]
    assert stop["signals_by_rank"] == ["SIGTERM", "SIGTERM"]  # Slurm signals every task
    assert stop["steps_done"] % 2 == 0  # agreed at a check step (every 2)
    assert stop["measured_steps_done"] < 1000000
    done = stop["measured_steps_done"]
    assert [len(r["step_times"]) for r in rec["per_rank"]] == [done, done]
    assert "stopping on SIGTERM" in log
    ckpt = stop["checkpoint"]
    assert ckpt["global_step"] == stop["steps_done"] == rec["global_step"]
    assert ckpt["dir"] == str(Path(rec["_path"]).with_suffix(".ckpt"))
    assert Path(ckpt["path"] + ".index").is_file(), (ckpt, log)
    assert f"checkpoint at global step {ckpt['global_step']} written to" in log
    signalled = re.search(r"STEP \S+ ON \S+ CANCELLED AT (\S+) \*\*\*", log)
    if signalled:  # slurmstepd's note of the SIGTERM it delivered, for the report
        sent = datetime.fromisoformat(signalled.group(1))
        ended = datetime.fromisoformat(fields["EndTime"])
        print(f"detection: sbatch --signal=TERM@60: SIGTERM to job end {ended - sent}")


def test_mpirun_script_forwards_scancel_signal(jobs: Jobs) -> None:
    """`scancel --signal=USR1 --batch` reaches the batch shell (as --signal=B:USR1 does),
    which passes it to mpirun, which forwards it to the ranks."""
    out = jobs.output("mpirun_scancel")
    if not wait_for_text(out, "Done warm up", JOB_TIMEOUT):
        pytest.fail(f"the mpirun job never got past warm-up: {jobs.log('mpirun_scancel')}")
    env = jobs.env
    r = run(["scancel", "--signal=USR1", "--batch", jobs.ids["mpirun_scancel"]], env=env,
            timeout=30)  # fmt: skip
    assert r.returncode == 0, r.output
    fields = jobs.wait("mpirun_scancel")
    log = jobs.log("mpirun_scancel")
    assert fields["ExitCode"] == "138:0", (fields, log)
    recs = jobs.records("mpirun_scancel")
    assert len(recs) == 1, log
    rec = recs[0]
    assert rec["status"] == "incomplete" and rec["stop"]["signal"] == "SIGUSR1"
    assert rec["totals"]["num_ranks"] == 2 and rec["totals"]["num_steps"] >= 1
    assert rec["slurm"]["job_id"] == jobs.ids["mpirun_scancel"]
    assert rec["slurm"]["step_id"] == "batch"  # mpirun's ranks live in the batch step
    assert rec["mode_details"]["controller"] == "mpi"


def test_packed_sweep_runs_points_as_srun_steps(jobs: Jobs) -> None:
    fields = jobs.wait("sweep")
    log = jobs.dirs["sweep"] / "study" / "logs" / f"slurm-{jobs.ids['sweep']}.out"
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    assert fields["JobState"] == "COMPLETED", text
    recs = jobs.records("sweep", "study")
    assert sorted(records.num_ranks(r) for r in recs) == [1, 2], text
    for r in recs:
        assert r["status"] == "complete"
        assert r["slurm"]["job_id"] == jobs.ids["sweep"]
        assert r["totals"]["per_device_batch_size"] == 8
    assert len({r["slurm"]["step_id"] for r in recs}) == 2  # one srun step per point
    rep = hvdbench("report", str(jobs.dirs["sweep"] / "study"), timeout=60)
    assert rep.returncode == 0, rep.output
    assert "| horovod | 2 | 16 | 1 |" in rep.stdout


def test_parameter_server_script(jobs: Jobs) -> None:
    """slurm/ps_srun.sbatch under srun --mpi=pmix: the ps task and both workers leave by
    themselves, so the job completes with exit 0 and nothing of it is left running."""
    fields = jobs.wait("ps")
    assert fields["JobState"] == "COMPLETED", jobs.log("ps")
    assert fields["ExitCode"] == "0:0", (fields, jobs.log("ps"))
    assert _settled_leftover(str(jobs.dirs["ps"])) == []
    recs = jobs.records("ps")
    assert len(recs) == 1, jobs.log("ps")
    assert recs[0]["status"] == "complete"
    assert recs[0]["mode"] == "parameter_server"
    assert recs[0]["totals"]["num_ranks"] == 2
    assert recs[0]["totals"]["num_steps"] == 20  # past a stop check (every 10 steps)
    assert recs[0]["slurm"]["job_id"] == jobs.ids["ps"]
    assert recs[0]["mode_details"]["roles_from"] == "mpi ranks"


def test_local_cluster_declares_more_cpus_than_the_machine(slurm_cluster: LocalSlurm) -> None:
    out = slurm_cluster.scontrol("show", "node", "-o").stdout
    assert "CPUTot=8" in out, out
