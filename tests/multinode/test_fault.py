"""A node's link is cut mid-run: the job ends within the fault-tolerance bounds, with a
message naming the unreachable node, and the cluster works again once the link is back.

Bounds, set short by the test through the config: the chief declares a rank lost after
``fault.heartbeat_timeout_s`` of silence; Slurm ends the job (NODE_FAIL) once slurmctld has
not heard from the cut node for ``SlurmdTimeout`` (20 s in the netcluster's slurm.conf).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hvdbench.study import records
from hvdbench.testbed.netcluster import NetCluster
from tests.conftest import REPO, run
from tests.multinode.conftest import net_env, wait_for_job, wait_for_text

pytestmark = pytest.mark.multinode

HEARTBEAT_TIMEOUT = 5.0
SLURMD_TIMEOUT = 20.0
CONFIG = """\
[model]
name = "trivial"
[train]
per_device_batch_size = 8
num_warmup_steps = 2
num_steps = 1000000
display_every = 100000
[fault]
heartbeat_interval_s = 0.5
heartbeat_timeout_s = {timeout}
step_deadline_s = 30.0
[output]
dir = "{out}"
"""


@pytest.mark.timeout(420)
def test_cut_link_ends_the_job_naming_the_node(net_cluster: NetCluster, tmp_path: Path) -> None:
    spec = net_cluster.spec
    env = net_env(net_cluster)
    (tmp_path / "records").mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(timeout=HEARTBEAT_TIMEOUT, out=tmp_path / "records"))
    r = run(["sbatch", "--parsable", "--time=5", "--nodes=2", "--ntasks-per-node=1",
             str(REPO / "slurm" / "horovod_srun.sbatch"), str(cfg)], env=env, cwd=tmp_path,
            timeout=60)  # fmt: skip
    assert r.returncode == 0, r.output
    job = r.stdout.strip().split(";")[0]
    out = tmp_path / f"slurm-{job}.out"
    victim = spec.node(2)
    try:
        if wait_for_text(out, "Done warm up", 240) is None:
            pytest.fail(
                f"the job never got past warm-up: {out.read_text() if out.exists() else ''}"
            )
        time.sleep(2)  # measured steps are running
        net_cluster.set_link(victim, up=False)
        cut_at = time.monotonic()
        message = f"on host {victim} stopped responding"
        seen = wait_for_text(out, message, HEARTBEAT_TIMEOUT + 20)
        assert seen is not None, out.read_text()
        fields = wait_for_job(net_cluster, job, SLURMD_TIMEOUT + HEARTBEAT_TIMEOUT + 60)
        ended = time.monotonic() - cut_at
    finally:
        net_cluster.set_link(victim, up=True)
    log = out.read_text(errors="replace")
    assert fields["JobState"] in ("NODE_FAIL", "FAILED"), (fields, log)
    assert ended < SLURMD_TIMEOUT + HEARTBEAT_TIMEOUT + 60, ended
    assert "hvdbench: error: rank 1 on host " + victim in log, log
    # The chief saved what was measured before aborting.
    recs = records.load(tmp_path / "records")
    assert len(recs) == 1, log
    assert recs[0]["status"] != "complete"
    assert victim in str(recs[0].get("error", "")), recs[0].get("error")
    # Once the link is back, the node is resumed and takes jobs again.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if net_cluster.node_states().get(victim, "").startswith("IDLE"):
            break
        time.sleep(1)
    assert net_cluster.node_states().get(victim, "").startswith("IDLE"), net_cluster.node_states()
