"""Start a local, loopback-only Ray for `moderation serve` and the serving benchmark.

Ray must send nothing beyond loopback here: usage stats off, the cloud-metadata probe avoided (HOME points
at a temporary folder holding `ray_bootstrap_config.yaml` with `provider: {type: local}`), node IP
127.0.0.1, no dashboard, a short temp dir. The environment variables are set before Ray is imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from serving.haproxy import haproxy_environment


@contextlib.contextmanager
def local_ray(num_cpus: int | None = None, proxy: str = "python") -> Iterator[object]:
    """Start Ray on 127.0.0.1 for the duration of the block, then shut Serve and Ray down and clean up.

    proxy: Serve's HTTP request path, "python" (Ray Serve's proxy actor) or "haproxy" (HAProxy straight to the
    ingress replicas, kept on loopback: serving.haproxy). Yields the `ray` module. Restores the environment.
    """
    if proxy not in ("python", "haproxy"):
        raise ValueError(f"proxy must be 'python' or 'haproxy', got {proxy!r}")
    home = tempfile.mkdtemp(prefix="rayhome-")
    Path(home, "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
    temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Serve's controller kills an HTTP proxy that is not ready within 5 s: on a busy 2-core machine, importing
    # Serve and FastAPI in a fresh worker can take longer (seen: the proxy "killed before it started running").
    env = {"HOME": home, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": os.environ.get("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")}
    if proxy == "haproxy":
        env.update(haproxy_environment(Path(temp_dir, "hap")))
    else:
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "0"
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import ray

    check_loopback(ray)
    with _patient_node_registration():
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, _temp_dir=temp_dir,
                 num_cpus=num_cpus or os.cpu_count() or 1, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        try:
            from ray import serve
            serve.shutdown()
        except Exception:  # noqa: BLE001 - Serve may never have started
            pass
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(temp_dir, ignore_errors=True)


#: Seconds ray.init waits for its raylet to register with the GCS (Ray 2.60 hard-codes 30 s in Node.__init__).
NODE_REGISTRATION_TIMEOUT_S = float(os.environ.get("MODERATION_RAY_NODE_TIMEOUT_S", "300"))


@contextlib.contextmanager
def _patient_node_registration() -> Iterator[None]:
    """Let ray.init wait up to NODE_REGISTRATION_TIMEOUT_S for the new node to register (seen on this 2-core
    machine with load average 50-60: "The current node timed out during startup" after Ray's fixed 30 s).

    Ray polls `services.get_node` and gives up 30 s after its first failure; the wrapper keeps polling inside
    that first call instead, so the node gets the longer budget. Restored on exit."""
    import time

    from ray._private import services

    original = services.get_node

    def get_node(*args: object, **kwargs: object) -> object:
        deadline = time.monotonic() + NODE_REGISTRATION_TIMEOUT_S
        while True:
            try:
                return original(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    services.get_node = get_node
    try:
        yield
    finally:
        services.get_node = original


def check_loopback(ray: object) -> None:
    """Refuse to start Ray if it would take the host's address as node IP (it was imported before
    `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` was set, see `serving/__init__.py`): its services would then listen
    beyond loopback."""
    from ray._private import services

    resolved = services.resolve_ip_for_localhost("127.0.0.1")
    if resolved != "127.0.0.1":
        raise RuntimeError(
            f"Ray would use {resolved} instead of 127.0.0.1 as its node address: `ray` was imported before "
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set. Import `serving` (which sets it) before anything imports ray.")


def bind_replica_grpc_to_loopback() -> None:
    """Keep Serve replicas' inter-deployment gRPC server on loopback when the node's address is 127.0.0.1.

    Ray Serve (2.60) binds that server to `[::]:0`, every interface, whatever the node's address; the routers
    reach it at the node's address, which here is 127.0.0.1. Called where replicas import this project's
    deployments (serving.model_core), before a replica finishes initialising; a node with a routable address is
    left as Ray made it.
    """
    try:
        import ray
        from ray.serve._private import replica
    except ImportError:  # Ray (or this part of it) absent: nothing to bind
        return
    original = replica.add_port_to_grpc_server
    if getattr(original, "_moderation_loopback", False):
        return

    def add_port(server: object, address: str) -> int:
        host, _, port = address.rpartition(":")
        if host in ("[::]", "0.0.0.0", "") and ray.is_initialized() and ray.util.get_node_ip_address() == "127.0.0.1":
            address = f"127.0.0.1:{port}"
        return original(server, address)

    add_port._moderation_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port


def start_http(host: str, port: int, keep_alive_timeout_s: float | None = None) -> None:
    """Start Serve's HTTP proxy on host:port (one proxy, on this node only). keep_alive_timeout_s: seconds an
    idle keep-alive connection stays open (None: Ray's default, 90)."""
    from ray import serve

    options = {"host": host, "port": port, "location": "HeadOnly"}
    if keep_alive_timeout_s is not None:
        options["keep_alive_timeout_s"] = keep_alive_timeout_s
    serve.start(http_options=options)
