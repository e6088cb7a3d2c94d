"""The Ray Serve application: a FastAPI ingress and a batched model, in one of two topologies.

    fused (default):  HTTP -> proxy -> ModerationAPI (FastAPI: auth, limits, parsing, per-item errors,
                                      OpenAI-shaped answer; holds the model: one Scorer, @serve.batch)
    split:            HTTP -> proxy -> ModerationAPI (FastAPI) -> ModerationModel (one Scorer, @serve.batch)

Both run the same code (`ModelCore` is the model side); "split" adds one Ray hop per request so that the
ingress and the model scale apart (e.g. CPU ingress replicas in front of GPU model replicas). On a CPU
machine that hop costs more than it buys: with the same two 1-CPU model replicas on 2 cores, fused served 9%
more one-post requests/s than split, measured A/B/A/B in one run (docs/benchmarks-serving.md), hence the default.

`build_app(args: ServeArgs)` is the app builder: `serve run serving.app:build_app model_dir=...`, a Serve
config file (serving/config.yaml) and `moderation serve` all start the same app.

No `from __future__ import annotations` here: Ray Serve converts the builder's argument dict into
`ServeArgs` only when the annotation is the class itself.
"""

import asyncio
import hashlib
import hmac
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serving.fetch import UrlAllowList, fetch_image
from serving.local_ray import bind_replica_grpc_to_loopback
from serving.metrics import IngressMetrics, ModelMetrics
from serving.parsing import Item, RequestRejected, format_results, parse_request, request_items, response_status
from serving.schemas import BatchConfig, RequestLimits, ServeArgs

bind_replica_grpc_to_loopback()  # in every replica process, before Serve opens its gRPC port

logger = logging.getLogger("ray.serve")

MODEL_DEPLOYMENT = "ModerationModel"
INGRESS_DEPLOYMENT = "ModerationAPI"


# Helpers defined before the deployments: serve.ingress pickles the class with the globals it sees then.

async def _wait(response: Any) -> Any:
    return await response


def _wire(item: Item) -> Dict[str, Any]:
    return {"id": item.id, "text": item.text, "image": item.image}


def _public(info: Any) -> Any:
    """A description fit for HTTP clients: no filesystem paths of the server (a `path` key is dropped; an absolute
    path among the values, e.g. a local encoder folder or checkpoint, is cut to its last component)."""
    if isinstance(info, dict):
        return {k: _public(v) for k, v in info.items() if k != "path"}
    if isinstance(info, (list, tuple)):
        return [_public(v) for v in info]
    if isinstance(info, str) and (info.startswith("~") or os.path.isabs(info)):
        return Path(info).name
    return info


def _error(status: int, code: str, message: str, details: Optional[list] = None,
           headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status,
                        headers=headers)


# --- the model deployment -----------------------------------------------------------------------------


class _Overloaded(Exception):
    """The fused replica's model queue is full: answer 503 at once."""


class ModelCore:
    """Holds one Scorer and scores posts in batches that mix posts from concurrent requests.

    `score(posts)` is what the ingress calls (one call per HTTP request, through a handle in the split
    topology, in-process in the fused one); each post joins the batch queue on its own, so max_batch_size
    counts posts. Batch size and wait are the deployment's `user_config` (see `BatchConfig`), applied by
    `reconfigure` at start and whenever the config changes at run time.
    """

    def __init__(self, model_dir: Optional[str], device: str = "cpu", precision: str = "fp32",
                 decode_workers: int = 2, torch_threads: int = 1, limits: Optional[Dict[str, Any]] = None,
                 ocr: str = "auto", ocr_with_image: bool = False, hash_lists: Optional[List[str]] = None) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import torch
        from moderation.inputs import InputLimits
        from moderation.scorer import Scorer

        # Ray sets the thread count from num_cpus only for some libraries; torch is told explicitly.
        torch.set_num_threads(max(1, torch_threads))
        req = RequestLimits.model_validate(limits or {})
        input_limits = InputLimits(max_text_chars=req.max_text_chars, max_image_bytes=req.max_image_bytes,
                                   max_image_pixels=req.max_image_pixels,
                                   max_image_aspect_ratio=req.max_image_aspect_ratio)
        opts = dict(batch_size=BatchConfig().max_batch_size, device=device, precision=precision,
                    limits=input_limits, num_workers=decode_workers, ocr=ocr, ocr_with_image=ocr_with_image,
                    hash_lists=list(hash_lists or []))
        self.scorer = Scorer.from_dir(model_dir, **opts) if model_dir else Scorer.default(**opts)
        self.torch_threads = torch.get_num_threads()
        self.batch_config = BatchConfig()
        self.metrics = ModelMetrics()
        # In-process counts, for /v1/model (the Prometheus histograms are the operator's view).
        self.batches = 0
        self.posts = 0
        self.largest_batch = 0
        # One thread runs the model, so the event loop stays free to accept posts and fill the next batch.
        self._compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moderation-model")
        # @serve.batch is applied per instance: the decorator keeps its queue (bound to one event loop) on the
        # decorated function, so decorating the class's method would share one queue between every instance
        # in a process (local testing mode, two apps in one process). Settings change later via reconfigure.
        self._score_one = serve.batch(max_batch_size=self.batch_config.max_batch_size,
                                      batch_wait_timeout_s=self.batch_config.batch_wait_timeout_s)(self._run_batch)
        if not self.scorer.trained:
            logger.warning("serving an UNTRAINED model head (%s): scores are not judgements and nothing is flagged",
                           self.scorer.model_version)

    def reconfigure(self, user_config: Dict[str, Any]) -> None:
        """Apply a new `BatchConfig` (batch size and wait, the policy) without restarting the replica.

        Raises PolicyError (the reconfigure fails, the old settings stay) for a policy that does not fit the model.
        """
        from moderation.policy import Policy

        config = BatchConfig.model_validate(user_config or {})
        # Checked before anything changes: a bad policy leaves the replica as it was.
        policy = self.scorer.resolve_policy(Policy.from_json(config.policy, "user_config.policy")
                                            if config.policy is not None else None)
        self.scorer.policy = policy
        self._score_one.set_max_batch_size(config.max_batch_size)
        self._score_one.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        # The scorer sorts a batch by length and runs it in chunks of this size (one chunk when None).
        self.scorer.batch_size = config.forward_batch_size or config.max_batch_size
        self.batch_config = config

    async def score(self, posts: List[Dict[str, Any]]) -> List[Any]:
        """Score posts ({id, text, image: bytes | None}); one ScoreResult per post, in order."""
        return list(await asyncio.gather(*(self._score_one(p) for p in posts)))

    async def _run_batch(self, posts: List[Dict[str, Any]]) -> List[Any]:
        """The batched scoring method (wrapped by serve.batch in __init__): a list of posts in, results out."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        results = await loop.run_in_executor(self._compute, self._score_batch, posts)
        self.metrics.batch(len(posts), (time.perf_counter() - start) * 1000)
        self.batches += 1
        self.posts += len(posts)
        self.largest_batch = max(self.largest_batch, len(posts))
        return results

    def _score_batch(self, posts: List[Dict[str, Any]]) -> List[Any]:
        from moderation.schema import Post

        # Posts from different requests share a batch and may share ids ("0" from OpenAI-shaped requests):
        # score them under their batch position so that the scorer's duplicate-id check does not fire.
        batch = [Post(id=str(i), text=p.get("text"), image=p.get("image")) for i, p in enumerate(posts)]
        results = self.scorer.score(batch)
        for result, post in zip(results, posts):
            result.id = post["id"]
        return results

    def describe(self) -> Dict[str, Any]:
        """The scorer's description (without the server's filesystem paths) plus the serving settings in force."""
        return {**_public(self.scorer.describe()), "batch": self.batch_config.model_dump(),
                "device": str(self.scorer.device),
                "precision": self.scorer.precision, "torch_threads": self.torch_threads,
                "stats": {"batches": self.batches, "posts": self.posts, "largest_batch": self.largest_batch}}


#: The model deployment of the split topology (its class is ModelCore, unchanged).
ModerationModel = serve.deployment(name=MODEL_DEPLOYMENT)(ModelCore)


# --- the ingress --------------------------------------------------------------------------------------


def make_ingress(docs: bool = True) -> Any:
    """A fresh ingress deployment with its own FastAPI app; `docs`: serve /docs, /redoc and /openapi.json.

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
    class ModerationAPI:
        """The HTTP front: checks auth and limits, parses requests, sends the good items to the model."""

        def __init__(self, model: Optional[DeploymentHandle], limits: Optional[Dict[str, Any]] = None,
                     token_sha256: Optional[str] = None, request_timeout_s: float = 30.0,
                     model_args: Optional[Dict[str, Any]] = None, admit: Optional[int] = None,
                     image_url_allowlist: Optional[List[str]] = None, image_fetch_timeout_s: float = 5.0,
                     decision_log: Optional[Dict[str, Any]] = None) -> None:
            """Split topology: `model` is the ModerationModel handle. Fused: `model` is None and the model is
            built here from `model_args` (ModelCore's arguments); at most `admit` requests are with the model
            at once (None: no bound) and any more are answered 503 at once."""
            if (model is None) == (model_args is None):
                raise ValueError("give either a model handle (split topology) or model_args (fused), not both or neither")
            self.model = model
            self.core = ModelCore(**model_args) if model_args is not None else None
            self._admit = admit
            self._with_model = 0
            self.limits = RequestLimits.model_validate(limits or {})
            self._token_sha256 = token_sha256
            self.request_timeout_s = request_timeout_s
            self.allow = UrlAllowList(image_url_allowlist or [])
            self.image_fetch_timeout_s = image_fetch_timeout_s
            self._http: Any = None  # httpx.AsyncClient for allow-listed image URLs, made on first use
            self.metrics = IngressMetrics()
            self._static: Optional[Dict[str, Any]] = None
            # One writer per replica (its own files: host and pid in the names); see moderation.decision_log.
            from moderation.decision_log import DecisionLog
            self.decision_log = DecisionLog(decision_log) if decision_log else None

        def reconfigure(self, user_config: Dict[str, Any]) -> None:
            """Fused topology: the batching settings (`BatchConfig`) of the model this replica holds."""
            if self.core is None:
                raise ValueError(f"split topology: batching settings are the user_config of {MODEL_DEPLOYMENT}, "
                                 f"not of {INGRESS_DEPLOYMENT}")
            self.core.reconfigure(user_config)

        # --- plain methods (also called through a handle in tests) ---

        def authorized(self, authorization: Optional[str]) -> bool:
            """True when no token is configured, or the header is `Bearer <token>` with the right token."""
            if self._token_sha256 is None:
                return True
            scheme, _, token = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return False
            digest = hashlib.sha256(token.strip().encode("utf-8")).hexdigest()
            return hmac.compare_digest(digest, self._token_sha256)

        async def _model_call(self, method: str, *args: Any, timeout_s: Optional[float] = None) -> Any:
            timeout_s = timeout_s or self.request_timeout_s
            if self.core is not None:  # fused: the model lives in this replica
                result = getattr(self.core, method)(*args)
                return await asyncio.wait_for(result, timeout=timeout_s) if asyncio.iscoroutine(result) else result
            response = getattr(self.model, method).remote(*args)
            try:
                return await asyncio.wait_for(_wait(response), timeout=timeout_s)
            except asyncio.TimeoutError:
                response.cancel()
                raise

        async def _static_info(self) -> Dict[str, Any]:
            # Version, categories and thresholds do not change while a replica lives (a new model = a new deployment).
            if self._static is None:
                info = await self._model_call("describe")
                self._static = {k: info[k] for k in ("model_version", "thresholds_version", "trained", "categories")}
            return self._static

        async def moderate(self, body: bytes, authorization: Optional[str] = None) -> Tuple[int, Dict[str, Any]]:
            """The whole of POST /v1/moderations on a body: (HTTP status, JSON body). Never raises."""
            start = time.perf_counter()
            if not self.authorized(authorization):
                return 401, {"error": {"code": "unauthorized", "details": None,
                                       "message": "missing or wrong bearer token; send 'Authorization: Bearer <token>'"}}
            try:
                request = parse_request(body, self.limits)
                items = request_items(request, self.limits, self.allow)
                if any(it.image_url for it in items):
                    items = await self._fetch_images(items)
                info = await self._static_info()
                good = [it for it in items if it.ok]
                scored = await self.score([_wire(it) for it in good]) if good else []
                results = format_results(items, scored, info["categories"])
            except RequestRejected as exc:
                return exc.status, exc.body()
            except (BackPressureError, _Overloaded):
                return 503, {"error": {"code": "overloaded", "details": None,
                                       "message": "the model is at capacity (queue full); retry after a short wait"}}
            except asyncio.TimeoutError:
                return 504, {"error": {"code": "timeout", "details": None,
                                       "message": f"the model did not answer within {self.request_timeout_s} s; retry later"}}
            except Exception as exc:  # noqa: BLE001 - an unexpected failure is a 500 with a JSON body, logged
                logger.exception("moderation request failed")
                return 500, {"error": {"code": "internal_error", "details": None,
                                       "message": f"internal error ({type(exc).__name__}); the server log has the details"}}
            self.metrics.results(results)
            payload = {
                "id": f"modr-{uuid.uuid4().hex}",
                "model": info["model_version"],
                "model_version": info["model_version"],
                "thresholds_version": info["thresholds_version"],
                # From the results: the policy can change while the replica runs (reconfigure).
                "policy_version": next((r.policy_version for r in scored if getattr(r, "policy_version", None)), None),
                "trained": info["trained"],
                "results": results,
                "errors": sum(r["error_code"] is not None for r in results),
            }
            if self.decision_log is not None:
                self._log_decisions(items, scored, info, (time.perf_counter() - start) * 1000, payload["id"])
            return response_status(results), payload

        def _log_decisions(self, items: List[Item], scored: List[Any], info: Dict[str, Any], latency_ms: float,
                           request_id: str) -> None:
            """Append the request's decisions to the decision log; a failing log never fails the request."""
            try:
                self.decision_log.log_request(items, scored, info["categories"], latency_ms=latency_ms,
                                              request_id=request_id, model_version=info["model_version"],
                                              thresholds_version=info["thresholds_version"])
            except Exception as exc:  # noqa: BLE001 - logged for the operator, the answer still goes out
                self.decision_log_errors = getattr(self, "decision_log_errors", 0) + 1
                logger.warning("decision log write failed (%d so far): %s", self.decision_log_errors, exc)

        async def _fetch_images(self, items: List[Item]) -> List[Item]:
            """Fetch the allow-listed image URLs of a request concurrently; a failed fetch fails its item only."""
            import httpx

            from moderation.schema import InputError

            if self._http is None:
                self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                               limits=httpx.Limits(max_connections=32))

            async def one(item: Item) -> Item:
                if not item.image_url:
                    return item
                try:
                    data = await fetch_image(self._http, item.image_url, self.limits.max_image_bytes,
                                             self.image_fetch_timeout_s)
                except InputError as exc:
                    return item.fail(exc)
                return Item(id=item.id, text=item.text, image=data)

            return list(await asyncio.gather(*(one(it) for it in items)))

        async def score(self, posts: List[Dict[str, Any]]) -> List[Any]:
            """Score wire posts ({id, text, image: bytes | None}) with the model; fused: refused with
            _Overloaded when `admit` requests are already with the model (split: Ray's queue limit does that)."""
            if self.core is None:
                return await self._model_call("score", posts)
            if self._admit is not None and self._with_model >= self._admit:
                raise _Overloaded()
            self._with_model += 1
            try:
                return await self._model_call("score", posts)
            finally:
                self._with_model -= 1

        async def ready(self) -> Tuple[bool, Dict[str, Any]]:
            """Whether the model answers (it only does once loaded), with its version."""
            try:
                info = await self._model_call("describe", timeout_s=5.0)
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said in the body
                return False, {"ready": False, "reason": f"{type(exc).__name__}: {exc}"[:300]}
            return True, {"ready": True, "model_version": info["model_version"], "trained": info["trained"]}

        async def model_info(self) -> Dict[str, Any]:
            info = await self._model_call("describe")
            return {**info, "limits": self.limits.model_dump(), "auth": self._token_sha256 is not None,
                    "topology": "split" if self.core is None else "fused"}

        # --- routes ---

        @api.get("/healthz")
        async def healthz(self) -> Dict[str, str]:
            """Alive: the ingress answers (says nothing about the model)."""
            return {"status": "ok"}

        @api.get("/readyz")
        async def readyz(self) -> JSONResponse:
            """Ready: the model replica is loaded and answers. 503 otherwise."""
            ok, body = await self.ready()
            return JSONResponse(body, status_code=200 if ok else 503)

        @api.get("/v1/model")
        async def model_route(self, request: Request) -> JSONResponse:
            """Model version, categories, thresholds, batching settings and request limits."""
            start = time.perf_counter()
            if not self.authorized(request.headers.get("authorization")):
                status, response = 401, _error(401, "unauthorized", "missing or wrong bearer token",
                                               headers={"WWW-Authenticate": "Bearer"})
            else:
                try:
                    status, response = 200, JSONResponse(await self.model_info())
                except (BackPressureError, _Overloaded):
                    status, response = 503, _error(503, "overloaded", "the model is at capacity; retry after a short wait")
                except Exception as exc:  # noqa: BLE001
                    status, response = 503, _error(503, "not_ready", f"the model does not answer ({type(exc).__name__})")
            self.metrics.request("/v1/model", status, (time.perf_counter() - start) * 1000)
            return response

        @api.post("/v1/moderations")
        async def moderations(self, request: Request) -> JSONResponse:
            """Score posts: OpenAI's request shape or ours; OpenAI's response shape plus our fields."""
            start = time.perf_counter()
            try:
                body = await self._read_body(request)
            except RequestRejected as exc:
                status, payload = exc.status, exc.body()
            else:
                status, payload = await self.moderate(body, request.headers.get("authorization"))
            headers = {}
            if status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            elif status == 503:
                headers["Retry-After"] = "1"
            elif status == 408:
                headers["Connection"] = "close"  # the rest of a slow body is not waited for
            self.metrics.request("/v1/moderations", status, (time.perf_counter() - start) * 1000)
            return JSONResponse(payload, status_code=status, headers=headers)

        async def _read_body(self, request: Request) -> bytes:
            """The body, refused with 413 as soon as it is known to exceed the limit (header or stream), with 408
            when it takes longer than `body_timeout_s` to arrive."""
            limit = self.limits.max_body_bytes
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise RequestRejected(413, "body_too_large", f"the request body is {declared} bytes, over the limit of {limit}; "
                                      "send fewer or smaller items per request")
            body = bytearray()

            async def receive() -> None:
                async for chunk in request.stream():
                    body.extend(chunk)
                    if len(body) > limit:
                        raise RequestRejected(413, "body_too_large", f"the request body is over the limit of {limit} "
                                              "bytes; send fewer or smaller items per request")

            # A client trickling its body would hold a replica slot for as long as it likes (Ray's proxy timeout can
            # be lifted by the client's own x-request-timeout-seconds header): the body has its own deadline.
            timeout = self.limits.body_timeout_s
            try:
                await asyncio.wait_for(receive(), timeout=timeout)
            except asyncio.TimeoutError:
                raise RequestRejected(408, "body_timeout", f"the request body did not arrive within {timeout:g} s; "
                                      "send it at once") from None
            return bytes(body)

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
    from moderation.hashes import HashList

    hash_lists = [str(HashList.load(Path(p).expanduser()).path.resolve()) for p in args.hash_lists]
    if args.policy:  # read here (a bad file stops the start); the replicas get its contents as user_config
        from moderation.policy import Policy

        args = args.model_copy(update={"batch": args.batch.model_copy(
            update={"policy": Policy.load(Path(args.policy).expanduser()).to_json()})})
    model_args = dict(model_dir=model_dir, device=args.device, precision=args.precision,
                      decode_workers=args.decode_workers, torch_threads=max(1, int(args.num_cpus)),
                      limits=args.limits.model_dump(), ocr=args.ocr, ocr_with_image=args.ocr_with_image,
                      hash_lists=hash_lists)
    decision_log = None
    if args.decision_log is not None:  # made (and checked writable) here: a bad folder stops the start
        from moderation.decision_log import DecisionLog
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
