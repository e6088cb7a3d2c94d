"""Applying calibration artifacts (fitting is tested in tests/eval)."""

from __future__ import annotations

import numpy as np
import pytest

from moderation.calibration import Calibration, apply_method, sigmoid


def test_methods():
    z = np.array([-2.0, 0.0, 2.0])
    np.testing.assert_allclose(apply_method("identity", {}, z), 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(apply_method("temperature", {"temperature": 2.0}, z), sigmoid(z / 2))
    np.testing.assert_allclose(apply_method("platt", {"a": 2.0, "b": 1.0}, z), sigmoid(2 * z + 1))
    iso = apply_method("isotonic", {"x": [0.0, 0.5, 1.0], "y": [0.0, 0.2, 1.0]}, z)
    np.testing.assert_allclose(iso, np.interp(sigmoid(z), [0, 0.5, 1], [0, 0.2, 1]))
    assert np.all(np.isfinite(sigmoid(np.array([-1e6, 1e6]))))


def test_errors_are_caught_at_load_time():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Calibration.from_json({"format_version": 1, "version": "v",
                               "categories": {"hate": {"method": "temperature", "params": {"temperature": 0}}}})
    with pytest.raises(ValueError, match="unknown method"):
        Calibration.from_json({"format_version": 1, "version": "v", "categories": {"hate": {"method": "magic"}}})
    with pytest.raises(ValueError, match="format_version"):
        Calibration.from_json({"format_version": 9, "version": "v"})


def test_apply_per_category_defaults_to_sigmoid():
    cal = Calibration("v", {"hate": {"method": "temperature", "params": {"temperature": 4.0}}})
    out = cal.apply(np.array([[4.0, 4.0]]), ["hate", "offensive"])
    np.testing.assert_allclose(out, [[sigmoid(1.0), sigmoid(4.0)]])
