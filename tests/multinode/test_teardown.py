"""The netcluster script itself: build is idempotent, teardown removes exactly what build
made (processes in the namespaces and started through its config, namespaces, links,
/etc/hosts lines, state), and a rate limit is applied on both ends of each link.

Uses a second, short-lived cluster of its own, beside the session's.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hvdbench.testbed.netcluster import HOSTS_FILE, NetCluster, NetSpec
from tests.conftest import REPO, base_env, run
from tests.multinode.conftest import free_subnet, skip_unless_possible

pytestmark = pytest.mark.multinode


def _cli(*args: str) -> str:
    r = run([sys.executable, "-m", "hvdbench.testbed.netcluster", "--name", "hvdmtb", *args],
            env=base_env(), cwd=REPO, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.output
    return r.stdout


@pytest.mark.timeout(240)
def test_build_is_idempotent_and_teardown_leaves_nothing() -> None:
    skip_unless_possible()
    hosts_before = HOSTS_FILE.read_text()
    subnet = free_subnet(prefix="10.213", name="hvdmtb")
    c = NetCluster(NetSpec(name="hvdmtb", subnet=subnet))
    c.down()
    try:
        out = _cli("up", "--nodes", "2", "--subnet", subnet, "--rate", "1gbit")
        assert out.strip() == f"export SLURM_CONF={c.spec.conf}"
        pids = c.load_state()["pids"]
        # again: nothing is rebuilt or restarted
        _cli("up", "--nodes", "2", "--subnet", subnet, "--rate", "1gbit")
        assert c.load_state()["pids"] == pids
        # own hostname per node, the node's address, tbf on both ends of the link
        r = run([sys.executable, "-m", "hvdbench.testbed.netcluster", "--name", "hvdmtb", "exec",
                 "hvdmtb2", "--", "sh", "-c", "hostname; ip -o -4 addr show dev eth0; "
                 "tc qdisc show dev eth0; getent hosts hvdmtb1"],
                env=base_env(), cwd=REPO, timeout=30)  # fmt: skip
        assert r.returncode == 0, r.output
        lines = r.stdout.splitlines()
        assert lines[0] == "hvdmtb2"
        assert f"{subnet}.12/24" in lines[1]
        assert "tbf" in lines[2] and "1Gbit" in lines[2]
        assert lines[3].split()[0] == f"{subnet}.11"
        host_side = subprocess.run(["tc", "qdisc", "show", "dev", "hvdmtb-v2"],
                                   capture_output=True, text=True, timeout=10).stdout  # fmt: skip
        assert "tbf" in host_side and "1Gbit" in host_side
        # something running on both nodes, through Slurm, and a process started on a node
        env = c.env(base_env())
        r = run(["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1",
                 "--wrap=srun sleep 300"], env=env, cwd="/tmp", timeout=30)  # fmt: skip
        assert r.returncode == 0, r.output
        job = r.stdout.strip()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "JobState=RUNNING" in c.scontrol("show", "job", job, "-o").stdout:
                break
            time.sleep(0.5)
        stray = subprocess.Popen(c.exec_argv("hvdmtb1", ["sleep", "300"]),
                                 start_new_session=True)  # fmt: skip
        time.sleep(2)
        assert len(c.our_processes()) >= 6  # munged, slurmctld, 2 slurmd, steps, sleeps
    finally:
        out = _cli("down")
    assert "removed netns hvdmtb1" in out and "removed bridge hvdmtb-br" in out
    assert c.leftovers() == []
    assert stray.wait(timeout=10) is not None
    assert HOSTS_FILE.read_text().rstrip("\n") == hosts_before.rstrip("\n")
    # and down again is harmless
    assert _cli("down") == ""
