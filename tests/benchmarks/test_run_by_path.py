"""The serving benchmarks are documented as run by path (`.venv/bin/python benchmarks/serve_latency.py ...`): they must
find the repository's packages from any working directory, not only with `python -m`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script", ["serve_latency.py", "serve_ab.py", "serve_autoscale.py", "serve_ingress.py"])
def test_serving_benchmark_runs_by_path(script, tmp_path):
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
