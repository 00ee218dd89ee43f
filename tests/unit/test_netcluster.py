"""The namespace cluster's pure parts: argv of every command, slurm.conf, /etc/hosts edits,
validation; and the network helpers: Slurm slots in Horovod's terms, ip output parsing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hvdbench.launch import netinfo
from hvdbench.testbed import netcluster as nc
from hvdbench.testbed import slurm_daemons

SPEC = nc.NetSpec(name="hvdnet", nodes=2, subnet="10.213.0", rate="1gbit", burst="256kb")


def test_names_and_addresses() -> None:
    assert SPEC.node_names == ["hvdnet1", "hvdnet2"]
    assert (SPEC.bridge, SPEC.bridge_address) == ("hvdnet-br", "10.213.0.1")
    assert [SPEC.address(k) for k in (1, 2)] == ["10.213.0.11", "10.213.0.12"]
    assert SPEC.host_veth(2) == "hvdnet-v2"
    assert SPEC.index_of("hvdnet2") == SPEC.index_of("2") == SPEC.index_of("10.213.0.12") == 2
    with pytest.raises(nc.NetClusterError, match="not one of: hvdnet1, hvdnet2"):
        SPEC.index_of("hvdnet3")


def test_network_commands() -> None:
    assert nc.bridge_commands(SPEC) == [
        ["ip", "link", "add", "hvdnet-br", "type", "bridge"],
        ["ip", "addr", "add", "10.213.0.1/24", "dev", "hvdnet-br"],
        ["ip", "link", "set", "hvdnet-br", "up"],
    ]
    assert nc.node_link_commands(SPEC, 2) == [
        ["ip", "netns", "add", "hvdnet2"],
        ["ip", "link", "add", "hvdnet-v2", "type", "veth", "peer", "name", "eth0", "netns", "hvdnet2"],
        ["ip", "link", "set", "hvdnet-v2", "master", "hvdnet-br", "up"],
        ["ip", "-n", "hvdnet2", "addr", "add", "10.213.0.12/24", "dev", "eth0"],
        ["ip", "-n", "hvdnet2", "link", "set", "eth0", "up"],
        ["ip", "-n", "hvdnet2", "link", "set", "lo", "up"],
    ]  # fmt: skip
    tbf = ["root", "tbf", "rate", "1gbit", "burst", "256kb", "latency", "100ms"]
    assert nc.rate_commands(SPEC, 1) == [
        ["tc", "qdisc", "replace", "dev", "hvdnet-v1", *tbf],
        ["tc", "-n", "hvdnet1", "qdisc", "replace", "dev", "eth0", *tbf],
    ]
    unlimited = nc.NetSpec()
    assert nc.rate_commands(unlimited, 1)[0] == ["tc", "qdisc", "del", "dev", "hvdnet-v1", "root"]
    assert nc.link_state_command(SPEC, 2, up=False) == ["ip", "link", "set", "hvdnet-v2", "down"]


def test_slurmd_runs_with_nsenter_in_its_own_mount_and_uts_namespaces() -> None:
    cmd = nc.slurmd_command(SPEC, 1, "/usr/sbin/slurmd")
    assert cmd[:2] == ["nsenter", "--net=/run/netns/hvdnet1"]  # not `ip netns exec`
    assert cmd[2:7] == ["unshare", "--mount", "--uts", "--propagation", "private"]
    assert cmd[-4:] == [
        "hvdnet1",
        "/run/hvdbench-net/hvdnet/pmixcli",
        "/usr/sbin/slurmd",
        "/run/hvdbench-net/hvdnet/slurm.conf",
    ]
    assert nc.exec_command(42, ["ip", "addr"]) == [
        "nsenter", "--target=42", "--net", "--uts", "--mount", "--", "ip", "addr"
    ]  # fmt: skip


def test_slurm_conf() -> None:
    conf = nc.slurm_conf(SPEC, "vm", 6817, 6818)
    assert "SlurmctldHost=vm(10.213.0.1)\n" in conf
    assert "SlurmdSpoolDir=/run/hvdbench-net/hvdnet/spool-%n\n" in conf
    assert "SlurmdPidFile=/run/hvdbench-net/hvdnet/slurmd-%n.pid\n" in conf
    assert "SlurmdLogFile=/run/hvdbench-net/hvdnet/slurmd-%n.log\n" in conf
    assert "NodeName=hvdnet2 NodeAddr=10.213.0.12 CPUs=4 " in conf
    assert "PartitionName=net Nodes=hvdnet1,hvdnet2 Default=YES" in conf
    assert "JobRequeue=0\n" in conf
    assert nc.mpi_conf(SPEC) == "PMIxCliTmpDirBase=/run/hvdbench-net/hvdnet/pmixcli\n"


def test_hosts_file_edits_only_our_lines(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.5 other\n")
    nc.write_hosts(SPEC, hosts)
    nc.write_hosts(SPEC, hosts)  # idempotent
    lines = hosts.read_text().splitlines()
    assert lines == [
        "127.0.0.1 localhost",
        "10.0.0.5 other",
        "10.213.0.11\thvdnet1\t# hvdbench-netcluster:hvdnet",
        "10.213.0.12\thvdnet2\t# hvdbench-netcluster:hvdnet",
    ]
    other = nc.NetSpec(name="other", subnet="10.213.5")
    nc.write_hosts(other, hosts)
    nc.remove_hosts("hvdnet", hosts)
    assert hosts.read_text().splitlines()[:2] == ["127.0.0.1 localhost", "10.0.0.5 other"]
    assert "hvdnet1" not in hosts.read_text() and "other1" in hosts.read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad-Name"}, "--name"),
        ({"name": "waytoolongname"}, "--name"),
        ({"nodes": 5}, "--nodes: 5 is not in 1..4"),
        ({"nodes": 0}, "--nodes"),
        ({"subnet": "10.213"}, "--subnet"),
        ({"subnet": "10.300.0"}, "--subnet"),
        ({"rate": "fast"}, "--rate"),
        ({"burst": "32kb"}, "below 64 KiB"),
    ],
)
def test_bad_spec_is_one_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(nc.NetClusterError, match=message):
        nc.NetSpec(**kwargs).validate()  # type: ignore[arg-type]


def test_cli_refuses_bad_input_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = nc.main(["up", "--nodes", "9"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1


# -- netinfo -------------------------------------------------------------------------------

SRUN = {
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "3",
    "SLURM_STEP_NODELIST": "hvdnet[1-2]",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_NODEID": "1",
    "SLURM_LOCALID": "1",
    "SLURM_JOB_ID": "17",
}


def test_slurm_slots_in_horovod_terms() -> None:
    s = netinfo.slurm_slots(SRUN)
    assert (s.hostname, s.rank, s.size, s.local_rank, s.local_size) == ("hvdnet2", 3, 4, 1, 2)
    assert (s.cross_rank, s.cross_size) == (1, 2)
    uneven = netinfo.slurm_slots(
        {
            **SRUN,
            "SLURM_STEP_TASKS_PER_NODE": "2,1",
            "SLURM_STEP_NUM_TASKS": "3",
            "SLURM_PROCID": "2",
            "SLURM_LOCALID": "0",
        }  # fmt: skip
    )
    assert (uneven.local_size, uneven.cross_rank, uneven.cross_size) == (1, 1, 2)
    env = netinfo.gloo_env(s, "10.213.0.11", 15000, "eth0")
    assert env["HOROVOD_HOSTNAME"] == "hvdnet2"
    assert env["HOROVOD_CROSS_RANK"] == "1" and env["HOROVOD_LOCAL_SIZE"] == "2"
    assert env["HOROVOD_CONTROLLER"] == env["HOROVOD_CPU_OPERATIONS"] == "gloo"
    assert env["HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "10.213.0.11"
    assert env["HOROVOD_GLOO_IFACE"] == "eth0"


def test_plan_scope_sizes_match_the_slots() -> None:
    pytest.importorskip("horovod")
    s = netinfo.slurm_slots(
        {**SRUN, "SLURM_STEP_TASKS_PER_NODE": "2,1", "SLURM_STEP_NUM_TASKS": "3"}
    )
    plan = netinfo._plan(s)
    assert [(p.hostname, p.rank, p.local_rank, p.cross_rank, p.local_size, p.cross_size)
            for p in plan] == [("hvdnet1", 0, 0, 0, 2, 2), ("hvdnet1", 1, 1, 0, 2, 1),
                               ("hvdnet2", 2, 0, 1, 1, 2)]  # fmt: skip


def test_gloo_outside_srun_is_a_usage_error() -> None:
    with pytest.raises(netinfo.UsageError, match="not inside an srun step"):
        netinfo.slurm_slots({})


def test_rendezvous_port_is_the_same_on_every_rank() -> None:
    assert netinfo.rendezvous_port(SRUN, 0) == netinfo.rendezvous_port(
        {**SRUN, "SLURM_PROCID": "0"}, 0
    )
    assert 15000 <= netinfo.rendezvous_port(SRUN, 0) < 30000
    assert netinfo.rendezvous_port(SRUN, 29500) == 29500


def test_ip_output_parsing() -> None:
    assert netinfo.parse_route_dev("10.213.0.11 dev eth0 src 10.213.0.12 uid 0 \\    cache ") == (
        "eth0",
        "10.213.0.12",
    )
    assert netinfo.parse_route_dev("local 10.213.0.11 dev lo src 10.213.0.11 uid 0") == (
        "lo",
        "10.213.0.11",
    )
    show = (
        "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"
        "2: eth0    inet 10.213.0.11/24 scope global eth0\\       valid_lft forever\n"
    )
    assert netinfo.parse_addr_owner(show, "10.213.0.11") == "eth0"
    assert netinfo.parse_addr_owner(show, "10.9.9.9") == ""
    assert netinfo.parse_addr_of(show, "eth0") == "10.213.0.11"


def test_daemon_commands_keep_munge_state_in_one_directory(tmp_path: Path) -> None:
    m = tmp_path / "munge"
    cmd = slurm_daemons.munged_command(m, m / "munge.key")
    assert cmd[0].endswith("munged") and cmd[1:3] == ["--foreground", "--force"]
    assert f"--socket={m}/munge.sock" in cmd and f"--key-file={m}/munge.key" in cmd
    assert {a.split("=")[0] for a in cmd[3:]} == {
        "--socket", "--key-file", "--log-file", "--pid-file", "--seed-file",
    }  # fmt: skip
    assert all(a.split("=", 1)[1].startswith(str(m)) for a in cmd[3:])
    ctld = slurm_daemons.slurmctld_command(tmp_path / "slurm.conf")
    assert ctld[1:] == ["-D", "-i", "-f", str(tmp_path / "slurm.conf")]


def test_find_looks_on_path_then_in_sbin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prog = tmp_path / "hvdbench-fake-daemon"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm_daemons.find(prog.name) == str(prog)
    monkeypatch.setattr(slurm_daemons, "SBIN_DIRS", (str(tmp_path),))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert slurm_daemons.find(prog.name) == str(prog)
    assert slurm_daemons.find("hvdbench-no-such-daemon") is None
    assert slurm_daemons.tool("hvdbench-no-such-daemon") == "hvdbench-no-such-daemon"


def test_wait_until_is_bounded_and_stops_on_a_failed_check() -> None:
    answers = iter([False, False, True])
    assert slurm_daemons.wait_until(lambda: next(answers), 5, poll=0)
    start = time.monotonic()
    assert not slurm_daemons.wait_until(lambda: False, 0.2, poll=0.05)
    assert time.monotonic() - start < 5

    def dead() -> None:
        raise RuntimeError("slurmctld exited with 1")

    with pytest.raises(RuntimeError, match="slurmctld exited"):
        slurm_daemons.wait_until(lambda: True, 5, check=dead)
