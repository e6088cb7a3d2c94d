"""The serving benchmark's helpers that need no Ray: process roles, CPU accounting, the text source."""

from __future__ import annotations

import time

from benchmarks.serve_latency import _role, load_texts, measure_cpu


def test_roles_from_ray_process_titles():
    assert _role("ray::ServeReplica:on:ModerationAPI") == "ModerationAPI replicas"
    assert _role("ray::ServeReplica:on:ModerationModel") == "model replicas"
    assert _role("ray::ProxyActor") == "proxy"
    assert _role("ray::ServeController.listen_for_change") == "ray (other)"
    assert _role("/usr/bin/python something_else.py") is None


def test_measure_cpu_counts_this_process_as_the_load_generator():
    def spin():
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        return "done"

    t0 = time.perf_counter()
    result, cores = measure_cpu(spin)
    wall = time.perf_counter() - t0
    assert result == "done"
    # cores = CPU seconds / the call's wall time: at most one core (one thread), and at least the 0.3 CPU seconds
    # spun over the wall time (however contended the machine: the wall time grows, the CPU seconds do not shrink)
    assert cores["load generator"] <= 1.1
    assert cores["load generator"] * wall >= 0.29


def test_load_texts_falls_back_to_synthetic_sentences_and_says_so(tmp_path, capsys):
    texts, source = load_texts(tmp_path / "no-datasets", 10)
    assert source == "synthetic" and len(texts) == 10 and all(t.strip() for t in texts)
    assert "not found" in capsys.readouterr().err
