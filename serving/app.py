"""The Ray Serve application: a FastAPI ingress and a batched model, in one of two topologies.

    fused (default):  HTTP -> proxy -> ModerationAPI (FastAPI: auth, limits, parsing, per-item errors,
                                      OpenAI-shaped answer; holds the model: one Scorer, @serve.batch)
    split:            HTTP -> proxy -> ModerationAPI (FastAPI) -> ModerationModel (one Scorer, @serve.batch)

The ingress is the plain class serving.ingress.ModerationIngress (its routes are added by `make_ingress`), the
model side serving.model_core.ModelCore. Both topologies run the same code; "split" adds one Ray hop per request so that the
ingress and the model scale apart (e.g. CPU ingress replicas in front of GPU model replicas). On a CPU
machine that hop costs more than it buys: with the same two 1-CPU model replicas on 2 cores, fused served 9%
more one-post requests/s than split, measured A/B/A/B in one run (docs/benchmarks-serving.md), hence the default.

`build_app(args: ServeArgs)` is the app builder: `serve run serving.app:build_app model_dir=...`, a Serve
config file (serving/config.yaml) and `moderation serve` all start the same app.

No `from __future__ import annotations` here: Ray Serve converts the builder's argument dict into
`ServeArgs` only when the annotation is the class itself.
"""

import hashlib
import os
from pathlib import Path
from typing import Any, Dict

from fastapi import FastAPI, Request
from ray import serve
from ray.serve import Application

from moderation.decision_log import DecisionLog
from moderation.hashes import HashList
from moderation.policy import Policy
from serving.ingress import INGRESS_DEPLOYMENT, JSONBody, ModerationIngress
from serving.model_core import MODEL_DEPLOYMENT, ModelCore
from serving.schemas import ErrorResponse, ModerationResponse, ServeArgs

#: The model deployment of the split topology (its class is ModelCore, unchanged).
ModerationModel = serve.deployment(name=MODEL_DEPLOYMENT)(ModelCore)

#: The documented answers of POST /v1/moderations (OpenAPI); tests validate every answer against them.
MODERATION_RESPONSES: Dict[int | str, Dict[str, Any]] = {
    200: {"model": ModerationResponse, "description": "at least one item scored (failed items carry their error)"},
    **{status: {"model": ErrorResponse, "description": what} for status, what in (
        (400, "the body is not JSON"), (401, "missing or wrong bearer token"), (408, "the body arrived too slowly"),
        (413, "the body is over the size limit"), (503, "the model is at capacity"),
        (504, "the model did not answer in time"))},
}


# --- the ingress --------------------------------------------------------------------------------------


def make_ingress(docs: bool = True) -> Any:
    """A fresh ingress deployment (serving.ingress.ModerationIngress) with its own FastAPI app and routes;
    `docs`: serve /docs, /redoc and /openapi.json.

    Built per application rather than at import: running an app in-process (local testing mode) stores
    state on the FastAPI object, which would then be pickled with the next application built.
    """
    api = FastAPI(
        title="Moderation endpoint",
        description="Scores posts (text, image or both) per harm category with calibrated, high-precision thresholds. "
                    "POST /v1/moderations takes OpenAI's moderation request shape or a list of posts.",
        version="1",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )

    @serve.deployment(name=INGRESS_DEPLOYMENT)
    @serve.ingress(api)
    class ModerationAPI(ModerationIngress):
        """The ingress with its routes on this application's FastAPI object."""

        @api.get("/healthz")
        async def healthz(self) -> Dict[str, str]:
            """Alive: the ingress answers (says nothing about the model)."""
            return {"status": "ok"}

        @api.get("/readyz")
        async def readyz(self) -> JSONBody:
            """Ready: the model replica is loaded and answers. 503 otherwise."""
            return await self.readyz_response()

        @api.get("/v1/model")
        async def model_route(self, request: Request) -> JSONBody:
            """Model version, categories, thresholds, batching settings and request limits."""
            return await self.model_response(request.headers.get("authorization"))

        @api.post("/v1/moderations", responses=MODERATION_RESPONSES)
        async def moderations(self, request: Request) -> JSONBody:
            """Score posts: OpenAI's request shape or ours; OpenAI's response shape plus our fields."""
            return await self.moderations_response(request)

    return ModerationAPI


# --- the app builder ----------------------------------------------------------------------------------


def model_deployment_options(args: ServeArgs) -> Dict[str, Any]:
    """Serve options of the model deployment: batching can fill, overload is shed, replicas as asked."""
    options: Dict[str, Any] = dict(
        max_ongoing_requests=args.model_max_ongoing_requests(),
        max_queued_requests=args.max_queued_requests,
        user_config=args.batch.model_dump(),
        ray_actor_options={"num_cpus": args.num_cpus, **({"num_gpus": args.num_gpus} if args.num_gpus else {})},
    )
    if args.autoscaling is not None:
        options["autoscaling_config"] = args.autoscaling.model_dump()
    else:
        options["num_replicas"] = args.num_replicas
    return options


def build_app(args: ServeArgs) -> Application:
    """Build the application from typed arguments (a dict is validated into ServeArgs).

    Raises ValueError when the model directory does not exist or the auth token's variable is unset.
    """
    if not isinstance(args, ServeArgs):
        args = ServeArgs.model_validate(args or {})
    model_dir = None
    if args.model_dir:
        path = Path(args.model_dir).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise ValueError(f"model directory {args.model_dir!r} not found or has no config.json; "
                             "give a directory written by `moderation train` (or leave model_dir unset for the default)")
        model_dir = str(path)
    token_sha256 = None
    if args.auth_token_env:
        token = os.environ.get(args.auth_token_env, "").strip()
        if not token:
            raise ValueError(f"auth_token_env is {args.auth_token_env!r} but that environment variable is unset or empty; "
                             f"export {args.auth_token_env}=<token> before starting the server")
        # Only a digest travels to the replicas: the token is not stored in Serve's deployment state.
        token_sha256 = hashlib.sha256(token.encode("utf-8")).hexdigest()

    # Hash lists are read here too, so that a missing or invalid list stops the start before Ray does anything.
    hash_lists = [str(HashList.load(Path(p).expanduser()).path.resolve()) for p in args.hash_lists]
    if args.policy:  # read here (a bad file stops the start); the replicas get its contents as user_config
        args = args.model_copy(update={"batch": args.batch.model_copy(
            update={"policy": Policy.load(Path(args.policy).expanduser()).to_json()})})
    model_args = dict(model_dir=model_dir, device=args.device, precision=args.precision, onnx_text=args.onnx_text,
                      decode_workers=args.decode_workers, torch_threads=max(1, int(args.num_cpus)),
                      limits=args.limits.model_dump(), ocr=args.ocr, ocr_with_image=args.ocr_with_image,
                      hash_lists=hash_lists)
    decision_log = None
    if args.decision_log is not None:  # made (and checked writable) here: a bad folder stops the start
        decision_log = {**args.decision_log.model_dump(), "path": str(Path(args.decision_log.path).expanduser().resolve())}
        DecisionLog(decision_log)
    common = dict(limits=args.limits.model_dump(), token_sha256=token_sha256, request_timeout_s=args.request_timeout_s,
                  decision_log=decision_log,
                  image_url_allowlist=list(args.image_url_allowlist), image_fetch_timeout_s=args.image_fetch_timeout_s)
    ingress = make_ingress(docs=token_sha256 is None)  # with auth on, the API's docs are not served: they need no token
    if args.topology == "split":
        model = ModerationModel.options(**model_deployment_options(args)).bind(**model_args)
        return ingress.options(
            num_replicas=args.ingress_replicas,
            max_ongoing_requests=args.ingress_max_ongoing_requests,
            max_queued_requests=args.ingress_max_queued_requests,
            ray_actor_options={"num_cpus": 0},
        ).bind(model, **common)
    # Fused: one deployment, with the model's replicas, CPUs and user_config. Ray hands a replica up to
    # ingress_max_ongoing_requests requests; the replica itself admits max_ongoing + max_queued of them to the
    # model and answers the others 503 at once, with a JSON body (Ray's proxy would answer plain text).
    options = model_deployment_options(args)
    admit = None if args.max_queued_requests < 0 else options["max_ongoing_requests"] + args.max_queued_requests
    options["max_ongoing_requests"] = max(args.ingress_max_ongoing_requests, admit or 0)
    options["max_queued_requests"] = args.ingress_max_queued_requests
    return ingress.options(**options).bind(None, model_args=model_args, admit=admit, **common)
