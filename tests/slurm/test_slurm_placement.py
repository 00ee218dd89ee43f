"""Placement the launcher gave: the one-node cluster runs TaskPlugin=task/affinity, so `srun
--cpu-bind=cores` and `--cpus-per-task` bind each task. hvdbench keeps that binding (it does
not slice it again by local rank) and binds by itself only when Slurm did not.

Runs after test_slurm_jobs.py (module order), whose tests wait for all of its jobs, so the
node is idle and the CPUs Slurm hands out are the machine's (the node declares 8 on 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hvdbench.launch.cputopo import parse_cpulist
from tests.conftest import run
from tests.slurm.cluster import LocalSlurm
from tests.slurm.conftest import slurm_env, wait_for_job

pytestmark = pytest.mark.slurm

# Each task writes what Slurm gave it (its mask, read before hvdbench starts, and Slurm's
# SLURM_CPU_BIND_LIST), then `hvdbench topology` reports what it believes and binds to.
STEPS = r"""#!/bin/bash
set -euo pipefail
T='mask=$(sed -n "s/^Cpus_allowed_list:[[:space:]]*//p" /proc/self/status)
echo "{\"mask\": \"$mask\", \"bind_list\": \"${SLURM_CPU_BIND_LIST:-}\", \"local\": $SLURM_LOCALID}" > given-$HOW-$SLURM_PROCID.json
exec "$HVDBENCH_PYTHON" -m hvdbench topology --json > topo-$HOW-$SLURM_PROCID.json'
HOW=cores srun -n 2 --cpu-bind=cores bash -c "$T"
HOW=per_task srun -n 2 --cpus-per-task=1 --cpu-bind=cores bash -c "$T"
HOW=one srun -n 1 --cpus-per-task=1 --cpu-bind=cores bash -c "$T"
HOW=unbound srun -n 2 --cpu-bind=none bash -c "$T"
"""

# The benchmark itself under srun --cpu-bind=cores: the record's CPUs per rank.
RUN = r"""#!/bin/bash
set -euo pipefail
srun --mpi=pmix -n 2 --cpu-bind=cores bash -c \
  'sed -n "s/^Cpus_allowed_list:[[:space:]]*//p" /proc/self/status > given-$SLURM_LOCALID.txt
   exec "$HVDBENCH_PYTHON" -m hvdbench run config.toml'
"""

CONFIG = """\
[model]
name = "trivial"
[train]
per_device_batch_size = 8
num_warmup_steps = 2
num_steps = 10
display_every = 5
[output]
dir = "{out}"
"""


def sbatch(cluster: LocalSlurm, d: Path, script: str, *args: str) -> str:
    (d / "job.sh").write_text(script)
    r = run(["sbatch", "--parsable", *args, str(d / "job.sh")], env=slurm_env(cluster), cwd=d,
            timeout=60)  # fmt: skip
    assert r.returncode == 0, r.output
    return r.stdout.strip().split(";")[0]


def mask_of(bind_list: str, local: int) -> list[int]:
    """CPU ids of task ``local``'s entry in SLURM_CPU_BIND_LIST (``0x1,0x2``)."""
    value = int(bind_list.split(",")[local], 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


@pytest.fixture(scope="module")
def steps(slurm_cluster: LocalSlurm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("placement")
    job = sbatch(slurm_cluster, d, STEPS, "--ntasks=2")
    fields = wait_for_job(slurm_cluster, job, 180)
    log = (d / f"slurm-{job}.out").read_text(errors="replace")
    assert fields["JobState"] == "COMPLETED", (fields, log)
    return d


def load(d: Path, how: str) -> list[tuple[dict, dict]]:
    pairs = []
    for given in sorted(d.glob(f"given-{how}-*.json")):
        rank = given.stem.rsplit("-", 1)[1]
        pairs.append(
            (json.loads(given.read_text()), json.loads((d / f"topo-{how}-{rank}.json").read_text()))
        )
    return sorted(pairs, key=lambda p: p[1]["rank"])


@pytest.mark.parametrize("how, ntasks", [("cores", 2), ("per_task", 2), ("one", 1)])
def test_slurms_binding_stands(steps: Path, how: str, ntasks: int) -> None:
    pairs = load(steps, how)
    assert len(pairs) == ntasks
    for given, topo in pairs:
        slurm_cpus = mask_of(given["bind_list"], given["local"])
        assert parse_cpulist(given["mask"]) == slurm_cpus  # Slurm bound the task
        assert topo["cpus"] == slurm_cpus  # and hvdbench kept it, not sliced again
        assert topo["binding"] == "launcher"
        assert topo["source"] == "slurm" and topo["local_size"] == ntasks
    if ntasks == 2:
        assert not set(pairs[0][1]["cpus"]) & set(pairs[1][1]["cpus"])


def test_without_slurms_binding_hvdbench_binds(steps: Path) -> None:
    pairs = load(steps, "unbound")
    assert len(pairs) == 2
    full = parse_cpulist(pairs[0][0]["mask"])
    for given, _ in pairs:
        assert parse_cpulist(given["mask"]) == full
    if len(full) >= 2:
        assert [t["binding"] for _, t in pairs] == ["hvdbench", "hvdbench"]
        assert not set(pairs[0][1]["cpus"]) & set(pairs[1][1]["cpus"])


def test_the_record_shows_the_cpus_slurm_gave(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    (tmp_path / "records").mkdir()
    (tmp_path / "config.toml").write_text(CONFIG.format(out=tmp_path / "records"))
    job = sbatch(slurm_cluster, tmp_path, RUN, "--ntasks=2")
    fields = wait_for_job(slurm_cluster, job, 240)
    log = (tmp_path / f"slurm-{job}.out").read_text(errors="replace")
    assert fields["JobState"] == "COMPLETED", (fields, log)
    recs = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    assert len(recs) == 1, log
    ranks = sorted(recs[0]["topology"]["ranks"], key=lambda r: r["local_rank"])
    assert len(ranks) == 2
    for r in ranks:
        given = parse_cpulist((tmp_path / f"given-{r['local_rank']}.txt").read_text())
        assert r["cpus"] == given, (r, log)
        assert r["binding"] == "launcher"
        assert r["intra_op_threads"] == len(given)  # the pools are sized to Slurm's CPUs


def test_submit_with_cpus_per_task(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """A real `hvdbench submit --cpus-per-task 1`: the job runs with Slurm's
    SLURM_CPUS_PER_TASK, and each rank's recorded CPUs are the ones its mask allowed."""
    from tests.conftest import hvdbench

    (tmp_path / "records").mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "records"))
    env = slurm_env(slurm_cluster)
    r = hvdbench("submit", str(cfg), "--nodes", "1", "--ntasks-per-node", "2",
                 "--cpus-per-task", "1", "--time", "5", "--sbatch-arg=--comment=hvdbench-test",
                 env=env, cwd=tmp_path, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.output
    assert " --cpus-per-task=1 --comment=hvdbench-test " in r.stdout, r.stdout
    job = r.stdout.split("submitted job ", 1)[1].split(":", 1)[0]
    fields = wait_for_job(slurm_cluster, job, 240)
    log = (tmp_path / f"slurm-{job}.out").read_text(errors="replace")
    assert fields["JobState"] == "COMPLETED", (fields, log)
    recs = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    assert len(recs) == 1, log
    assert recs[0]["environment"].get("SLURM_CPUS_PER_TASK") == "1", recs[0]["environment"]
    ranks = recs[0]["topology"]["ranks"]
    assert len(ranks) == 2 and all(r["binding"] in ("launcher", "hvdbench") for r in ranks)
    assert not set(ranks[0]["cpus"]) & set(ranks[1]["cpus"])
