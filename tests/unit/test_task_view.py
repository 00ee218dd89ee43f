"""What each task of a ps/worker cluster is given of it: pure functions, no TensorFlow.

A worker other than the chief must get O(num_ps) addresses however many workers the job
has; a ps task and the chief get everything (a ps server receives from every worker; the
chief records the whole cluster)."""

from __future__ import annotations

import json

import pytest

from hvdbench.launch.job import JobLayout, Role
from hvdbench.modes.grpc import cluster
from hvdbench.modes.grpc.cluster import ClusterSpec, TaskView

PS = ("ps0:1", "ps1:1")
WORKERS = tuple(f"w{i}:2" for i in range(6))
SPEC = ClusterSpec(PS, WORKERS)


def test_a_ps_task_knows_every_worker():
    view = cluster.task_view(SPEC, Role("ps", 1))
    assert view.complete and view.spec() == SPEC
    assert cluster.server_cluster(view, Role("ps", 1)) == {"ps": list(PS), "worker": list(WORKERS)}


def test_the_chief_knows_every_worker_but_its_server_only_itself():
    view = cluster.task_view(SPEC, Role("worker", 0))
    assert view.complete and view.spec() == SPEC and view.num_addresses == 8
    assert cluster.server_cluster(view, Role("worker", 0)) == {
        "ps": list(PS),
        "worker": {0: "w0:2"},
    }


def test_a_worker_knows_the_ps_tasks_and_itself_only():
    view = cluster.task_view(SPEC, Role("worker", 4))
    assert view == TaskView(PS, ((4, "w4:2"),), 6)
    assert not view.complete and view.num_addresses == 3
    assert view.address(Role("worker", 4)) == "w4:2" and view.address(Role("ps", 1)) == "ps1:1"
    with pytest.raises(ValueError, match="worker 3's address is not known"):
        view.address(Role("worker", 3))
    with pytest.raises(ValueError, match="knows 1 of 6 workers"):
        view.spec()
    server = cluster.server_cluster(view, Role("worker", 4))
    assert server == {"ps": list(PS), "worker": {4: "w4:2"}}


@pytest.mark.parametrize("num_workers", [3, 100, 2000])
def test_a_workers_view_does_not_grow_with_the_job(num_workers):
    spec = ClusterSpec(PS, tuple(f"w{i}:2" for i in range(num_workers)))
    sizes = {
        cluster.task_view(spec, Role("worker", i)).num_addresses for i in range(1, num_workers)
    }
    assert sizes == {len(PS) + 1}
    assert cluster.task_view(spec, Role("worker", 0)).num_addresses == len(PS) + num_workers


def test_task_views_are_in_rank_order_as_the_roles_from_ranks():
    addresses = [*PS, *WORKERS]
    views = cluster.task_views(addresses, len(PS))
    layout = JobLayout("parameter_server", len(PS), len(WORKERS))
    assert len(views) == len(addresses)
    for rank, view in enumerate(views):
        role = layout.role(rank)
        assert view == cluster.task_view(SPEC, role)
        assert view.address(role) == addresses[rank]  # each rank finds its own address
        assert view.num_workers == len(WORKERS) and view.ps == PS


def test_a_sparse_view_in_the_record():
    d = cluster.describe(cluster.task_view(SPEC, Role("worker", 2)), Role("worker", 2))
    assert d["cluster"] == {"ps": list(PS), "worker": {"2": "w2:2"}}
    assert d["cluster_complete"] is False
    assert sorted(d["resolved"]) == ["ps0", "ps1", "w2"]
    json.dumps(d)  # the record is JSON
    whole = cluster.describe(TaskView.whole(SPEC), Role("worker", 0))
    assert whole["cluster"] == {"ps": list(PS), "worker": list(WORKERS)}
    assert whole["cluster_complete"] is True


def test_no_ps_job_without_ps_tasks():
    spec = ClusterSpec((), ("a:1", "b:1"))
    assert TaskView.whole(spec).as_dict() == {"worker": ["a:1", "b:1"]}
