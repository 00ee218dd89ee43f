"""Sweep planning, all-reduce size parsing and bandwidth definitions, stop signals."""

from __future__ import annotations

import os
import signal

import pytest

from hvdbench.components import stopping
from hvdbench.errors import UsageError
from hvdbench.study import allreduce, sweep


def test_parse_ranks_and_modes() -> None:
    assert sweep.parse_ranks("4,1,2,2") == [1, 2, 4]
    for bad in ("0", "1,x", "-2", ""):
        with pytest.raises(UsageError, match="--ranks"):
            sweep.parse_ranks(bad)
    assert sweep.parse_modes("horovod,horovod") == ["horovod"]
    with pytest.raises(UsageError, match="--modes: 'nope'"):
        sweep.parse_modes("horovod,nope")


def test_plan_puts_repeats_outermost() -> None:
    pts = sweep.plan([1, 2], ["a", "b"], 2)
    assert [p.label for p in pts] == [
        "a-n1-r0", "a-n2-r0", "b-n1-r0", "b-n2-r0",
        "a-n1-r1", "a-n2-r1", "b-n1-r1", "b-n2-r1",
    ]  # fmt: skip


def test_each_point_of_a_mixed_study_reads_only_its_modes_keys(tmp_path) -> None:
    """A study over horovod and parameter_server may set both modes' keys (here one from
    the command line, one from its file): each point gets the other mode's put back to its
    default, and the points' configs load as each rank will load them."""

    cfg = tmp_path / "study.toml"
    cfg.write_text("[horovod]\nnum_groups = 1\n")
    overrides = ["--ps.sync=false"]
    resets = sweep.unread_resets(str(cfg), overrides, ["horovod", "parameter_server"])
    assert resets == {"horovod": ["--ps.sync=true"], "parameter_server": ["--horovod.num_groups=0"]}
    hvd = sweep.point_config(
        str(cfg), sweep.Point("horovod", 2, 0), "auto", [*overrides, *resets["horovod"]]
    )
    ps = sweep.point_config(
        str(cfg),
        sweep.Point("parameter_server", 2, 0),
        "auto",
        [*overrides, *resets["parameter_server"]],
    )
    assert (hvd.horovod.num_groups, hvd.ps.sync) == (1, True)
    assert (ps.horovod.num_groups, ps.ps.sync) == (0, False)
    argv = sweep.run_argv(
        str(cfg), sweep.Point("horovod", 2, 0), "out", [*overrides, *resets["horovod"]]
    )
    assert argv.index("--ps.sync=true") > argv.index("--ps.sync=false")  # the later one wins


def test_a_key_no_mode_of_the_study_reads_is_refused() -> None:
    overrides = ["--mode.num_devices=4"]
    resets = sweep.unread_resets(None, overrides, ["horovod", "parameter_server"])
    assert resets == {"horovod": [], "parameter_server": []}
    with pytest.raises(UsageError, match=r"^mode.num_devices: 4 is not read by mode horovod"):
        sweep.point_config(None, sweep.Point("horovod", 2, 0), "auto", overrides)


def test_point_env_tags_the_record() -> None:
    env = sweep.point_env({"PATH": "/bin"}, sweep.Point("horovod", 2, 1), launched=True)
    assert env["HVDBENCH_STUDY_POINT"] == "mode=horovod,ranks=2,repeat=1"
    assert env["HVDBENCH_LAUNCHED"] == "1"
    assert "HVDBENCH_LAUNCHED" not in sweep.point_env({}, sweep.Point("h", 1, 0), launched=False)


@pytest.mark.parametrize(
    "text, value", [("1KiB", 1024), ("256MiB", 256 * 2**20), ("4096", 4096), ("1KB", 1000),
                    ("1.5MiB", 3 * 2**19)],
)  # fmt: skip
def test_parse_size(text: str, value: int) -> None:
    assert allreduce.parse_size(text) == value


def test_parse_sizes_range_and_list() -> None:
    assert allreduce.parse_sizes("1KiB..8KiB") == [1024, 2048, 4096, 8192]
    assert allreduce.parse_sizes("1KiB..256MiB", 4)[-1] == 256 * 2**20
    assert len(allreduce.parse_sizes("1KiB..256MiB")) == 19
    assert allreduce.parse_sizes("4MiB,1KiB") == [1024, 4 * 2**20]
    for bad in ("1XB..2MiB", "2MiB..1KiB", "2"):
        with pytest.raises(UsageError, match="--sizes"):
            allreduce.parse_sizes(bad)


def test_bandwidth_definitions_follow_nccl_tests() -> None:
    # 1 GB in 0.5 s: algbw 2 GB/s; busbw = algbw * 2(n-1)/n
    assert allreduce.algbw(10**9, 0.5) == 2e9
    assert allreduce.busbw(10**9, 0.5, 2) == 2e9
    assert allreduce.busbw(10**9, 0.5, 4) == 3e9
    assert allreduce.busbw(10**9, 0.5, 1) == 0.0
    r = allreduce.result("mpi4py", 4096, 10, 1e-3, 8)
    assert r.count == 1024 and r.algbw_GBps == pytest.approx(4.096e-3)
    assert r.busbw_GBps == pytest.approx(4.096e-3 * 14 / 8)
    assert allreduce.iterations(2**30, 20, 2**30) == 1
    assert allreduce.iterations(1024, 20, 2**30) == 20


def test_stop_request_sets_a_flag_instead_of_dying() -> None:
    before = signal.getsignal(signal.SIGTERM)
    req = stopping.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert req.requested and req.signum == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)
        assert req.signum == signal.SIGUSR1  # the first one counts
        assert req.received == [signal.SIGUSR1, signal.SIGTERM]
    finally:
        stopping.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before and not req.requested
    assert stopping.exit_code(signal.SIGUSR1) == 138
    assert stopping.exit_code(signal.SIGTERM) == 143
    assert [s for s in range(1, 11) if stopping.should_check(s, 5)] == [5, 10]
    assert stopping.signal_name(10) == "SIGUSR1"
