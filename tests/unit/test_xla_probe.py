"""The XLA verdict: read from the names of the modules XLA's dump holds, not from the
request (no TensorFlow here; the multi-process tests run real XLA compilations)."""

from __future__ import annotations

import os

import pytest

from hvdbench.components import xla

DUMP = [
    "module_0001.a_inference_hvdbench_xla_pass_212__.212.before_optimizations.txt",
    "module_0001.a_inference_hvdbench_xla_pass_212__.212.ir-with-opt.ll",
    "module_0000.a_inference_hvdbench_xla_pass_127__.127.before_optimizations.txt",
    "module_0000.a_inference_hvdbench_xla_pass_127__.127.cpu_after_optimizations.txt",
    "module_0002.a_inference__update_step_xla_88__.88.before_optimizations.txt",
]


def test_modules_in_compilation_order_and_ours_by_function_name():
    modules = xla.compiled_modules(DUMP)
    assert modules == [
        "a_inference_hvdbench_xla_pass_127__",
        "a_inference_hvdbench_xla_pass_212__",
        "a_inference__update_step_xla_88__",
    ]
    assert xla.pass_modules(modules) == modules[:2]
    # a function whose name only starts like ours is not ours
    assert xla.pass_modules(["a_inference_hvdbench_xla_pass_extra_3__"]) == []


def test_verdicts():
    on = xla.judge(True, xla.compiled_modules(DUMP), 0.5)
    assert on.compiled and on.requested and len(on.modules) == 2
    assert "first step took 0.50 s" in on.evidence
    # XLA compiled something else (Keras' own update step on a GPU), not the pass
    other = xla.judge(True, ["a_inference__update_step_xla_88__"], 0.5)
    assert not other.compiled and "_update_step_xla" in other.evidence
    assert not xla.judge(True, [], 0.5).compiled
    off = xla.judge(False, [], 0.5)
    assert off.to_dict() == {
        "requested": False,
        "compiled": False,
        "evidence": "train.jit_compile=false: the step is not compiled by XLA",
        "modules": [],
    }
    assert xla.verdict_line(on).startswith("XLA:         compiled: XLA compiled 2 HLO")
    assert xla.verdict_line(other).startswith("XLA:         NOT compiled")


def test_summary_is_compiled_only_where_every_rank_was():
    yes = xla.judge(True, ["a_inference_hvdbench_xla_pass_1__"], 1.0).to_dict()
    no = xla.judge(True, [], 1.0).to_dict()
    s = xla.summary([yes, no])
    assert s["requested"] and not s["compiled"] and s["ranks_compiled"] == 1 and s["ranks"] == 2
    assert xla.summary([yes, yes])["compiled"]


def test_probe_leaves_the_environment_alone_unless_asked():
    env: dict[str, str] = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    probe = xla.Probe.start(False, env)
    assert env == {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    assert probe.check(0.1).evidence.startswith("train.jit_compile=false")


def test_probe_adds_a_dump_directory_and_reads_it():
    env: dict[str, str] = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    probe = xla.Probe.start(True, env)
    assert probe.directory and os.path.isdir(probe.directory)
    assert env["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false --xla_dump_to={probe.directory}"
    assert not probe.check(0.1).compiled  # nothing compiled yet
    for name in DUMP:
        open(os.path.join(probe.directory, name), "w").close()
    assert probe.check(0.1).compiled
    assert probe.final().modules == xla.pass_modules(xla.compiled_modules(DUMP))
    probe.close()
    assert not os.path.exists(probe.directory) and probe.final().compiled


def test_a_dump_directory_of_the_users_counts_only_new_modules(tmp_path):
    (tmp_path / DUMP[0]).write_text("")  # from an earlier run
    env = {"XLA_FLAGS": f"--xla_dump_to={tmp_path}"}
    probe = xla.Probe.start(True, env)
    assert probe.directory == str(tmp_path) and env["XLA_FLAGS"] == f"--xla_dump_to={tmp_path}"
    assert not probe.check(0.1).compiled
    (tmp_path / DUMP[2]).write_text("")
    assert probe.check(0.1).modules == ["a_inference_hvdbench_xla_pass_127__"]
    probe.close()
    assert (tmp_path / DUMP[0]).exists()  # the user's dump stays


def test_no_step_no_claim():
    probe = xla.Probe.start(True, {})
    final = probe.final()
    assert final.requested and not final.compiled and final.evidence == "no step ran"


@pytest.mark.parametrize("requested", [True, False])
def test_banner_says_what_is_known_before_the_first_step(requested):
    text = xla.banner_text(requested)
    assert ("XLA on" not in text) and (("requested" in text) == requested)
