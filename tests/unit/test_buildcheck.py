"""Reading `horovodrun --check-build` and the rebuild advice."""

from __future__ import annotations

from hvdbench.launch import buildcheck

CPU_BUILD = """\
Horovod v0.28.1:

Available Frameworks:
    [X] TensorFlow
    [ ] PyTorch
    [ ] MXNet

Available Controllers:
    [X] MPI
    [X] Gloo

Available Tensor Operations:
    [ ] NCCL
    [ ] DDL
    [ ] CCL
    [X] MPI
    [X] Gloo
"""


def test_parse_cpu_build():
    built = buildcheck.parse_check_build(CPU_BUILD)
    assert built["TensorFlow"] and built["MPI"] and built["Gloo"]
    assert not built["NCCL"] and not built["PyTorch"]
    assert buildcheck.missing_features(built, ["TensorFlow", "MPI", "Gloo"]) == []
    assert buildcheck.missing_features(built, ["TensorFlow", "NCCL"]) == ["NCCL"]


def test_a_feature_missing_in_either_listing_is_missing():
    text = CPU_BUILD.replace("Controllers:\n    [X] MPI", "Controllers:\n    [ ] MPI")
    assert buildcheck.missing_features(buildcheck.parse_check_build(text), ["MPI"]) == ["MPI"]


def test_rebuild_message_says_how():
    msg = buildcheck.rebuild_message(["Gloo", "NCCL"])
    assert "HOROVOD_WITH_GLOO=1" in msg and "HOROVOD_GPU_OPERATIONS=NCCL" in msg
    assert "\n" not in msg
