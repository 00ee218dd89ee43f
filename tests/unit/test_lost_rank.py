"""Naming the rank mpirun lost by its role in a parameter-server job (no TensorFlow)."""

from __future__ import annotations

from hvdbench import cli, config
from hvdbench.launch import launcher


def test_mpirun_message_gives_the_rank():
    line = "mpirun noticed that process rank 2 with PID 0 on node vm exited on signal 9 (Killed)."
    m = launcher.LOST_RANK.search(line)
    assert m and m.group(1) == "2"


def test_ranks_of_a_ps_job_are_named_by_role():
    cfg = config.load(None, ["--mode.name=parameter_server", "--launch.np=2", "--ps.num_ps=1"])
    role = cli.rank_roles(cfg, 3)
    assert role is not None
    assert role(0).startswith("ps task 0 (under mpirun a lost ps task is not restarted")
    assert role(1) == "worker task 0 (the chief)"
    assert role(2) == "worker task 1"


def test_horovod_ranks_need_no_names():
    cfg = config.load(None, ["--launch.np=2"])
    assert cli.rank_roles(cfg, 2) is None
