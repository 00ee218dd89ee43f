"""Cross-node runs through the project's own sbatch scripts on the namespace cluster, with
the topology their records report: hosts, local ranks per node, the interface and address
each rank used, and gRPC tasks advertised on node addresses, never loopback.

All jobs are submitted at once by a module fixture (each node declares 6 CPUs), so the
module takes about as long as its slowest job; each test then waits, bounded, for its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hvdbench.study import records
from hvdbench.testbed.netcluster import NetCluster
from tests.conftest import REPO, run
from tests.multinode.conftest import net_env, wait_for_job

pytestmark = pytest.mark.multinode

JOB_TIMEOUT = 240  # s, per job, from the time the test starts waiting
SLOW_START_S = 35
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


class Jobs:
    def __init__(self, cluster: NetCluster, root: Path) -> None:
        self.cluster, self.root = cluster, root
        self.env = net_env(cluster)
        self.ids: dict[str, str] = {}
        self.dirs: dict[str, Path] = {}

    def sbatch(self, name: str, script: str, sbatch_args: list[str], *args: str) -> None:
        d = self.root / name
        (d / "records").mkdir(parents=True)
        (d / "config.toml").write_text(CONFIG.format(out=d / "records"))
        self.dirs[name] = d
        cmd = ["sbatch", "--parsable", "--time=5", *sbatch_args, str(REPO / "slurm" / script),
               str(d / "config.toml"), *args]  # fmt: skip
        r = run(cmd, env=self.env, cwd=d, timeout=60)
        assert r.returncode == 0, r.output
        self.ids[name] = r.stdout.strip().split(";")[0]

    def wait(self, name: str) -> dict[str, str]:
        return wait_for_job(self.cluster, self.ids[name], JOB_TIMEOUT)

    def log(self, name: str) -> str:
        p = self.dirs[name] / f"slurm-{self.ids[name]}.out"
        return p.read_text(errors="replace") if p.exists() else f"(no {p.name})"

    def record(self, name: str) -> dict[str, Any]:
        fields = self.wait(name)
        log = self.log(name)
        assert fields["JobState"] == "COMPLETED", (fields, log)
        recs = records.load(self.dirs[name] / "records")
        assert len(recs) == 1, log
        assert recs[0]["status"] == "complete", log
        assert recs[0]["slurm"]["job_id"] == self.ids[name]
        return recs[0]


@pytest.fixture(scope="module")
def jobs(net_cluster: NetCluster, tmp_path_factory: pytest.TempPathFactory) -> Jobs:
    j = Jobs(net_cluster, tmp_path_factory.mktemp("multinode"))
    two_by_two = ["--nodes=2", "--ntasks-per-node=2"]
    j.sbatch("mpi", "horovod_srun.sbatch", two_by_two)
    j.sbatch("gloo", "horovod_srun.sbatch", two_by_two, "--launch.srun_controller=gloo")
    # rank 0, which serves the Gloo rendezvous, starts 35 s late (a slow TensorFlow import):
    # past Gloo's own default and fault.heartbeat_timeout_s, inside launch.startup_timeout_s
    j.sbatch("gloo_slow", "horovod_srun.sbatch", ["--nodes=2", "--ntasks-per-node=1"],
             "--launch.srun_controller=gloo", "--launch.debug_startup_delay_rank=0",
             f"--launch.debug_startup_delay_s={SLOW_START_S}")  # fmt: skip
    j.sbatch("collective", "ps_srun.sbatch", ["--nodes=2", "--ntasks-per-node=1"],
             "--mode.name=collective_all_reduce")  # fmt: skip
    # block distribution: ps (rank 0) and worker 0 on the first node, worker 1 on the second
    j.sbatch("ps", "ps_srun.sbatch", ["--nodes=2", "--ntasks=3"],
             "--mode.name=parameter_server")  # fmt: skip
    return j


def _check_ranks_per_node(rec: dict[str, Any], cluster: NetCluster, per_node: int) -> None:
    spec = cluster.spec
    nodes = spec.node_names
    topo = rec["topology"]
    assert topo["world_size"] == per_node * len(nodes)
    assert topo["hosts"] == nodes
    assert topo["local_sizes"] == {n: per_node for n in nodes}
    assert rec["slurm"]["nodes"] == nodes
    for r in topo["ranks"]:
        node = r["rank"] // per_node  # srun's block distribution
        assert r["host"] == nodes[node], r
        assert r["local_rank"] == r["rank"] % per_node, r
        assert r["local_size"] == per_node, r
        # the node's own link, not loopback and not the host's interface
        assert r["network"]["interface"] == "eth0", r
        assert r["network"]["address"] == spec.address(node + 1), r


def test_horovod_over_mpi_across_nodes(jobs: Jobs, net_cluster: NetCluster) -> None:
    rec = jobs.record("mpi")
    _check_ranks_per_node(rec, net_cluster, 2)
    assert rec["mode_details"]["controller"] == "mpi"
    assert rec["mode_details"]["gloo"] is None
    assert {r["network"]["how"] for r in rec["topology"]["ranks"]} == {
        f"route to {n}" for n in net_cluster.spec.node_names
    }
    assert rec["totals"]["num_ranks"] == 4 and rec["totals"]["total_images_per_sec"] > 0


def test_horovod_over_gloo_under_srun(jobs: Jobs, net_cluster: NetCluster) -> None:
    """No horovodrun and no ssh: hvdbench serves Horovod's Gloo rendezvous on rank 0's node,
    and each rank takes the interface of its route there."""
    rec = jobs.record("gloo")
    _check_ranks_per_node(rec, net_cluster, 2)
    details = rec["mode_details"]
    assert details["controller"] == "gloo", jobs.log("gloo")
    spec = net_cluster.spec
    assert details["gloo"]["rendezvous_host"] == spec.node(1)
    assert details["gloo"]["rendezvous"].startswith(f"{spec.address(1)}:")
    assert details["gloo"]["gloo_iface"] == "eth0"
    assert {r["network"]["how"] for r in rec["topology"]["ranks"]} == {"HOROVOD_GLOO_IFACE"}
    env = rec["environment"]
    assert env["HOROVOD_CONTROLLER"] == "gloo" and env["HOROVOD_GLOO_IFACE"] == "eth0"
    assert rec["totals"]["num_ranks"] == 4 and rec["totals"]["total_images_per_sec"] > 0


def test_horovod_over_gloo_under_srun_waits_for_a_rank_0_that_starts_late(
    jobs: Jobs, net_cluster: NetCluster
) -> None:
    """The other ranks wait for the rendezvous within launch.startup_timeout_s, not the
    30 s of fault.heartbeat_timeout_s or of Horovod's Gloo store."""
    rec = jobs.record("gloo_slow")
    _check_ranks_per_node(rec, net_cluster, 1)
    assert rec["mode_details"]["controller"] == "gloo", jobs.log("gloo_slow")
    assert rec["environment"]["HOROVOD_GLOO_TIMEOUT_SECONDS"] == "600"
    assert rec["config"]["launch"]["debug_startup_delay_s"] == SLOW_START_S
    assert rec["totals"]["num_ranks"] == 2


def _check_grpc_addresses(rec: dict[str, Any], cluster: NetCluster) -> list[str]:
    spec = cluster.spec
    details = rec["mode_details"]
    tasks = [t for job in details["cluster"].values() for t in job]
    hosts = [t.rpartition(":")[0] for t in tasks]
    for host in hosts:
        assert host in spec.node_names, tasks
        assert details["resolved"][host] == spec.address(spec.index_of(host)), details
    return hosts


def test_collective_all_reduce_across_nodes(jobs: Jobs, net_cluster: NetCluster) -> None:
    rec = jobs.record("collective")
    assert rec["mode"] == "collective_all_reduce"
    hosts = _check_grpc_addresses(rec, net_cluster)
    assert hosts == net_cluster.spec.node_names  # worker 0 on node 1, worker 1 on node 2
    assert rec["topology"]["hosts"] == net_cluster.spec.node_names
    assert rec["totals"]["num_ranks"] == 2


def test_parameter_server_ps_on_one_node_workers_on_both(
    jobs: Jobs, net_cluster: NetCluster
) -> None:
    rec = jobs.record("ps")
    spec = net_cluster.spec
    assert rec["mode"] == "parameter_server"
    _check_grpc_addresses(rec, net_cluster)
    cluster = rec["mode_details"]["cluster"]
    assert [t.rpartition(":")[0] for t in cluster["ps"]] == [spec.node(1)]
    assert [t.rpartition(":")[0] for t in cluster["worker"]] == [spec.node(1), spec.node(2)]
    assert rec["totals"]["num_ranks"] == 2
