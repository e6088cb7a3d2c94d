"""Two Ray nodes on 127.0.0.1 (serving.cluster), end to end: the batch job spread over both, the worker node killed
mid-job, nothing lost or duplicated and the output identical to the local engine's; the endpoint with a replica per
node keeps answering when one node is killed. Slow (minutes: two `ray start`s, the real default model): `-m slow`.
The same drill with figures: benchmarks/two_node.py (docs/deploy.md)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("ray")
pytest.importorskip("pyarrow")
pytest.importorskip("httpx")

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(3600)]


@pytest.fixture()
def cluster():
    from serving.cluster import LoopbackCluster

    c = LoopbackCluster.create(cpus_per_node=1)
    try:
        yield c.start(2)
    finally:
        c.stop()
    assert not c.processes(), "every process of the cluster ended"


def test_batch_job_survives_a_killed_node_and_the_endpoint_keeps_answering(cluster, tmp_path):
    from benchmarks.two_node import batch_drill, endpoint_drill, make_dump

    assert [n.name for n in cluster.nodes] == ["node_a", "node_b"]
    assert all(n["alive"] for n in cluster.gcs_nodes())
    dump = tmp_path / "dump.jsonl"
    ids = make_dump(dump, 300)
    batch = batch_drill(cluster, dump, tmp_path, ids, chunk_size=16, model=None, timeout_s=2400)
    assert batch["job_finished_after_kill"], batch  # node_b had scored rows, then was killed, then the job ended
    assert batch["ray_exit"] == batch["local_exit"] == 1, batch  # 1: the malformed row and the repeated id
    assert (batch["rows_lost"], batch["rows_duplicated"]) == (0, 0), batch
    assert batch["rows_ray"] == batch["rows_local"] == 302 and batch["identical"], batch
    assert "node_a" in batch["ray_summary"] and "node_b" in batch["ray_summary"], batch  # work on both nodes
    assert batch["non_loopback_sockets_at_peak"] == [], batch
    deadline = time.monotonic() + 120  # the GCS marks a node dead after missed health checks (~15 s here)
    while True:
        alive = {n["node_id"]: n["alive"] for n in cluster.gcs_nodes()}
        if not alive[cluster.node("node_b").node_id] or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert alive == {cluster.node("node_a").node_id: True, cluster.node("node_b").node_id: False}

    endpoint = endpoint_drill(cluster, tmp_path, requests=30, model=None, timeout_s=1200)
    assert "error" not in endpoint, endpoint
    assert endpoint["replicas_per_node_before"] == {"node_a": 1, "node_c": 1}, endpoint
    assert endpoint["non_loopback_sockets_at_peak"] == [], endpoint
    # once the node is known dead, the replica on node_a answers everything
    after = endpoint["answers_after_marked_dead"]
    assert set(after) == {"200"} and after["200"] >= 30, endpoint
    assert set(endpoint["answers_before_kill"]) == {"200"}, endpoint
