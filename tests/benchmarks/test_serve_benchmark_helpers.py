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

    result, cores = measure_cpu(spin)
    assert result == "done"
    assert 0.3 <= cores["load generator"] <= 1.1  # busy for the whole call on one core (less if the CPU is contended)


def test_load_texts_falls_back_to_synthetic_sentences_and_says_so(tmp_path, capsys):
    texts, source = load_texts(tmp_path / "no-datasets", 10)
    assert source == "synthetic" and len(texts) == 10 and all(t.strip() for t in texts)
    assert "not found" in capsys.readouterr().err
