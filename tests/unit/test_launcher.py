"""Launcher command lines are pure functions: assert the exact argv."""

from __future__ import annotations

import pytest

from hvdbench import config
from hvdbench.errors import UsageError
from hvdbench.launch import launcher
from hvdbench.launch.launcher import launch_command

RANK = ["/venv/bin/python", "-m", "hvdbench", "run", "--np", "2"]


def test_horovodrun_local_gloo():
    assert launcher.horovodrun_command(2, RANK) == [
        "horovodrun",
        "-np",
        "2",
        "-H",
        "localhost:2",
        "--gloo",
        *RANK,
    ]


def test_horovodrun_hosts_mpi_interface():
    cmd = launcher.horovodrun_command(
        4,
        RANK,
        hosts="n1:2,n2:2",
        controller="mpi",
        network_interface="eth1",
        horovodrun="/x/horovodrun",
    )
    assert cmd == [
        "/x/horovodrun",
        "-np",
        "4",
        "-H",
        "n1:2,n2:2",
        "--mpi",
        "--network-interface",
        "eth1",
        *RANK,
    ]


def test_horovodrun_rejects_unknown_controller():
    with pytest.raises(UsageError, match="launch.horovodrun_controller"):
        launcher.horovodrun_command(2, RANK, controller="nccl")


def test_mpirun_local():
    assert launcher.mpirun_command(2, RANK) == [
        "mpirun",
        "-np",
        "2",
        "-H",
        "localhost:2",
        "--bind-to",
        "none",
        "--map-by",
        "slot",
        *RANK,
    ]


def test_mpirun_multi_node_exports_and_interface():
    cmd = launcher.mpirun_command(
        8,
        RANK,
        hosts="a:4,b:4",
        network_interface="ib0",
        export=["HOROVOD_CYCLE_TIME", "PATH"],
        oversubscribe=True,
    )
    assert cmd == [
        "mpirun",
        "-np",
        "8",
        "-H",
        "a:4,b:4",
        "--bind-to",
        "none",
        "--map-by",
        "slot",
        "--oversubscribe",
        "--mca",
        "btl_tcp_if_include",
        "ib0",
        "--mca",
        "oob_tcp_if_include",
        "ib0",
        "-x",
        "HOROVOD_CYCLE_TIME",
        "-x",
        "PATH",
        *RANK,
    ]


def test_export_names_are_filtered_and_sorted():
    env = {
        "PATH": "/b",
        "HOME": "/root",
        "TF_X": "1",
        "HOROVOD_A": "1",
        "SECRET": "s",
        "NCCL_DEBUG": "INFO",
    }
    assert launcher.export_names(env) == ["HOROVOD_A", "NCCL_DEBUG", "PATH", "TF_X"]


def test_launch_env_as_root():
    env = launcher.launch_env({"A": "1"}, is_root=True)
    assert env["OMPI_ALLOW_RUN_AS_ROOT"] == "1" and env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] == "1"
    assert env["HVDBENCH_LAUNCHED"] == "1"
    assert "OMPI_ALLOW_RUN_AS_ROOT" not in launcher.launch_env({}, is_root=False)


def test_parse_hosts():
    assert launcher.parse_hosts("a:2, b ,c:3") == [("a", 2), ("b", 1), ("c", 3)]
    for bad in ("a:0", ":2", "a:b", ","):
        with pytest.raises(UsageError):
            launcher.parse_hosts(bad)


def test_launch_command_follows_config():
    cfg = config.load(None, ["--launch.launcher=mpirun", "--launch.np=2"])
    cmd = launch_command(cfg, 2, RANK)
    assert cmd[0].endswith("mpirun") and cmd[1:3] == ["-np", "2"] and cmd[-len(RANK) :] == RANK
    cfg = config.load(None, ["--launch.np=2"])  # auto: mpirun for Horovod mode
    assert launch_command(cfg, 2, RANK)[0].endswith("mpirun")
    cfg = config.load(
        None,
        ["--launch.np=2", "--launch.launcher=horovodrun", "--launch.horovodrun_controller=mpi"],
    )
    cmd = launch_command(cfg, 2, RANK)
    assert cmd[0].endswith("horovodrun") and "--mpi" in cmd


def test_run_dry_run_prints_launcher(capsys):
    from hvdbench.cli import main

    assert main(["run", "--np", "2", "--dry-run", "--train.num_steps=5"]) == 0
    out = capsys.readouterr().out.split()
    assert out[0].endswith("mpirun") and out[1:5] == ["-np", "2", "-H", "localhost:2"]
    assert out[-6:] == ["-m", "hvdbench", "run", "--np", "2", "--train.num_steps=5"]
    argv = ["run", "--np", "2", "--dry-run", "--launch.launcher=horovodrun"]
    assert main(argv) == 0
    out = capsys.readouterr().out.split()
    assert out[0].endswith("horovodrun")
    assert out[1:6] == ["-np", "2", "-H", "localhost:2", "--gloo"]
