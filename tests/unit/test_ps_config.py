"""Config keys of the gRPC modes, cluster arithmetic and roles (no TensorFlow)."""

from __future__ import annotations

import pytest

from hvdbench import config
from hvdbench.errors import UsageError
from hvdbench.launch.job import JobLayout, Role
from hvdbench.modes.grpc import cluster
from hvdbench.modes.grpc.cluster import ClusterSpec

PS = "--mode.name=parameter_server"


def load(*overrides: str) -> config.Config:
    return config.load(None, list(overrides))


def error(*overrides: str) -> str:
    with pytest.raises(UsageError) as e:
        load(*overrides)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_defaults_are_valid_and_documented():
    cfg = load(PS)
    assert cfg.ps.num_ps == 1 and cfg.ps.sync and cfg.ps.replicas_to_aggregate == 0
    for section in ("ps", "cluster"):
        for name, f in config.section_fields(section).items():
            assert f.metadata["help"], f"{section}.{name}"
    assert "[ps]" in config.describe() and "cluster.ps_hosts" in config.describe()


def test_every_mode_name_is_known():
    for name in (
        "parameter_server",
        "distributed_replicated",
        "collective_all_reduce",
        "replicated",
        "independent",
    ):
        assert name in config.MODE_NAMES


def test_world_size_counts_ps_on_top_of_workers():
    cfg = load(PS, "--ps.num_ps=2", "--launch.np=3")
    layout = JobLayout.plan(cfg)
    assert layout.world_size == 5
    assert layout.formula(3) == "ps(2) + workers(3)"


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["--ps.num_ps=0"], "ps.num_ps: must be >= 1"),
        (
            ["--ps.replicas_to_aggregate=3", "--launch.np=2"],
            "ps.replicas_to_aggregate(3) > workers(2)",
        ),
        (["--cluster.job_name=ps"], "cluster.job_name='ps' needs cluster.ps_hosts"),
        (["--cluster.job_name=boss"], "cluster.job_name: 'boss' is not one of"),
        (
            [
                "--cluster.job_name=worker",
                "--cluster.ps_hosts=a:1",
                "--cluster.worker_hosts=b:1,c:1",
                "--cluster.task_index=2",
            ],
            "cluster.task_index(2) >= worker tasks(2)",
        ),
        (
            ["--cluster.job_name=ps", "--cluster.ps_hosts=a:1,b:1", "--cluster.worker_hosts=c:1"],
            "cluster.ps_hosts: 2 host(s) != ps.num_ps(1)",
        ),
        (
            [
                "--cluster.job_name=ps",
                "--cluster.ps_hosts=a:1",
                "--cluster.worker_hosts=c:1",
                "--launch.np=2",
            ],
            "cluster.worker_hosts: 1 host(s) != launch.np(2)",
        ),
        (
            ["--cluster.job_name=ps", "--cluster.ps_hosts=a", "--cluster.worker_hosts=c:1"],
            "cluster.ps_hosts: cannot read 'a'",
        ),
        (
            ["--cluster.job_name=ps", "--cluster.ps_hosts=a:99999", "--cluster.worker_hosts=c:1"],
            "expected host:port",
        ),
        (
            ["--cluster.ps_hosts=a:1", "--cluster.worker_hosts=c:1"],
            "cluster.job_name: set ps or worker",
        ),
        (["--train.mixed_precision=float16"], "not supported by mode parameter_server"),
        (["--ps.debug_slow_worker=2", "--launch.np=2"], "ps.debug_slow_worker(2) >= workers(2)"),
        (["--cluster.base_port=70000"], "cluster.base_port: must be <= 65535"),
        (["--ps.idle_timeout_s=0"], "ps.idle_timeout_s: must be > 0"),
    ],
)
def test_bad_ps_configs_say_what_is_wrong(overrides, expected):
    assert expected in error(PS, *overrides)


def test_mode_specific_checks():
    assert error("--mode.name=distributed_replicated", "--ps.staged_vars=true") == (
        "ps.staged_vars: true is not supported by mode distributed_replicated; it supports "
        "only false (true in: parameter_server)"
    )
    assert "has no ps tasks" in error(
        "--mode.name=collective_all_reduce",
        "--cluster.job_name=ps",
        "--cluster.worker_hosts=a:1",
    )
    assert "runs in one process" in error("--mode.name=replicated", "--launch.np=2")
    assert error("--cluster.job_name=worker") == (
        "cluster.job_name: mode horovod takes no cluster role or host lists; the modes that "
        "do: parameter_server, distributed_replicated, collective_all_reduce"
    )


def test_explicit_cluster_is_accepted():
    cfg = load(
        PS,
        "--cluster.job_name=worker",
        "--cluster.task_index=1",
        "--cluster.ps_hosts=node1:2222",
        "--cluster.worker_hosts=node2:2222,node3:2222",
    )
    spec = cluster.explicit_spec(cfg)
    assert spec.as_dict() == {"ps": ["node1:2222"], "worker": ["node2:2222", "node3:2222"]}


def test_roles_from_ranks():
    assert [JobLayout("parameter_server", 2, 0).launched_as(5).role(r) for r in range(5)] == [
        Role("ps", 0),
        Role("ps", 1),
        Role("worker", 0),
        Role("worker", 1),
        Role("worker", 2),
    ]
    with pytest.raises(UsageError, match=r"ps\(2\) \+ workers\(0\) leaves no worker"):
        JobLayout("parameter_server", 2, 0).launched_as(2)


def test_rank_arithmetic():
    JobLayout("parameter_server", 1, 4, np=4).launched_as(5)
    assert JobLayout("parameter_server", 1, 0).launched_as(7).num_workers == 6  # np 0
    with pytest.raises(UsageError, match=r"ps\(1\) \+ workers\(4\) != ranks\(6\)"):
        JobLayout("parameter_server", 1, 4, np=4).launched_as(6)


def test_spec_from_ranks_keeps_rank_order_not_string_order():
    addrs = ["node9:1", "node10:1", "node2:1"]
    spec = cluster.spec_from_ranks(addrs, 1)
    assert spec == ClusterSpec(("node9:1",), ("node10:1", "node2:1"))
    assert spec.address(Role("worker", 1)) == "node2:1"


def test_tf_config():
    import json

    spec = ClusterSpec((), ("a:1", "b:2"))
    assert json.loads(cluster.tf_config(spec, Role("worker", 1))) == {
        "cluster": {"worker": ["a:1", "b:2"]},
        "task": {"type": "worker", "index": 1},
    }


def test_free_ports_are_distinct_and_free():
    ports = cluster.free_ports(4)
    assert len(set(ports)) == 4
    assert not any(cluster.port_in_use(p) for p in ports)
    # never from the kernel's ephemeral range, where an outgoing connection could take a
    # port between its choice and the server's bind
    low = cluster.ephemeral_low()
    assert all(cluster.PICK_FROM <= p < low for p in ports), (ports, low)


def test_free_ports_fall_back_to_the_kernel_without_room_below_the_ephemeral_range():
    ports = cluster.free_ports(3, low=cluster.PICK_FROM + 10)
    assert len(set(ports)) == 3 and not any(cluster.port_in_use(p) for p in ports)


def test_free_ports_skip_a_port_in_use(monkeypatch):
    import socket

    with socket.socket() as s:  # the only free candidate but one is taken
        s.bind(("", cluster.PICK_FROM + 5))
        s.listen()
        monkeypatch.setattr(cluster.random.SystemRandom, "shuffle", lambda self, x: None)
        ports = cluster.free_ports(20, low=cluster.PICK_FROM + 400)
        assert cluster.PICK_FROM + 5 not in ports and len(set(ports)) == 20


def test_ephemeral_low_reads_the_kernels_range(tmp_path):
    f = tmp_path / "range"
    f.write_text("40000\t60999\n")
    assert cluster.ephemeral_low(str(f)) == 40000
    assert cluster.ephemeral_low(str(tmp_path / "missing")) == 32768


def test_port_in_use_is_named():
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cluster.port_in_use(port)
        with pytest.raises(UsageError, match=f"port {port} .* already in use"):
            cluster.check_port_free(f"127.0.0.1:{port}", "ps task 0")
        assert port not in cluster.free_ports(2, base=port)


def test_spawn_task_argv():
    from hvdbench.modes.grpc import spawn

    cfg = load(PS, "--launch.np=2", "--ps.num_ps=1")
    spec, roles = spawn.plan(cfg, [10, 11, 12])
    assert roles == [Role("ps", 0), Role("worker", 0), Role("worker", 1)]
    assert spawn.task_argv(["run", "--np", "2"], spec, roles[2]) == [
        "run", "--np", "2",
        "--cluster.ps_hosts=127.0.0.1:10",
        "--cluster.worker_hosts=127.0.0.1:11,127.0.0.1:12",
        "--cluster.job_name=worker",
        "--cluster.task_index=1",
    ]  # fmt: skip


def test_dry_run_prints_every_task_of_the_local_cluster(capsys):
    from hvdbench import cli

    assert cli.main(["run", PS, "--np", "2", "--ps.num_ps=2", "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert [line.split("--cluster.job_name=")[1].split()[0] for line in lines] == [
        "ps",
        "ps",
        "worker",
        "worker",
    ]
    assert all("--dry-run" not in line for line in lines)
