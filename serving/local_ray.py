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


@contextlib.contextmanager
def local_ray(num_cpus: int | None = None) -> Iterator[object]:
    """Start Ray on 127.0.0.1 for the duration of the block, then shut Serve and Ray down and clean up.

    Yields the `ray` module. Restores HOME afterwards.
    """
    home = tempfile.mkdtemp(prefix="rayhome-")
    Path(home, "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
    temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Serve's controller kills an HTTP proxy that is not ready within 5 s: on a busy 2-core machine, importing
    # Serve and FastAPI in a fresh worker can take longer (seen: the proxy "killed before it started running").
    env = {"HOME": home, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": os.environ.get("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import ray

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


def start_http(host: str, port: int, keep_alive_timeout_s: float | None = None) -> None:
    """Start Serve's HTTP proxy on host:port (one proxy, on this node only). keep_alive_timeout_s: seconds an
    idle keep-alive connection stays open (None: Ray's default, 90)."""
    from ray import serve

    options = {"host": host, "port": port, "location": "HeadOnly"}
    if keep_alive_timeout_s is not None:
        options["keep_alive_timeout_s"] = keep_alive_timeout_s
    serve.start(http_options=options)
