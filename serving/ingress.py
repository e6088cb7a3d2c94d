"""The HTTP ingress of the moderation endpoint as a plain class: auth, limits, parsing, per-item errors, the
OpenAI-shaped answer, and the model behind it (a handle in the split topology, a `ModelCore` in the fused one).

`serving.app.make_ingress` turns it into the Serve deployment with its FastAPI routes; everything the routes
answer is a method here, so the class reads (and is tested) without Serve's decorators.
"""

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

from fastapi import Request
from fastapi.responses import Response
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from moderation.decision_log import DecisionLog
from moderation.schema import InputError, openai_name
from serving.fetch import UrlAllowList, fetch_image
from serving.metrics import IngressMetrics
from serving.model_core import MODEL_DEPLOYMENT, ModelCore, Overloaded, logger
from serving.parsing import Item, RequestRejected, format_results, parse_request, request_items, response_status
from serving.schemas import RequestLimits

INGRESS_DEPLOYMENT = "ModerationAPI"

try:  # orjson encodes a response several times faster than the standard library (benchmarks/serve_ingress.py)
    import orjson
except ImportError:  # pragma: no cover - the `serve` extra installs it
    orjson = None


def encode_json(obj: Any) -> bytes:
    """A response body as compact UTF-8 JSON (orjson when installed, else the standard library, same output for
    the bodies sent here: strings, numbers, booleans, null, lists and string-keyed objects)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # e.g. a lone surrogate in an explained text: the standard library below escapes it
            pass
    # backslashreplace writes a lone surrogate as its JSON escape (\udc00), which is still valid JSON.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8", "backslashreplace")


class JSONBody(Response):
    """A JSON response encoded by `encode_json` (FastAPI's JSONResponse uses the standard library)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return encode_json(content)


async def _wait(response: Any) -> Any:
    return await response


async def _within(awaitable: Any, timeout_s: float) -> Any:
    """Await with a deadline (asyncio.TimeoutError past it). On Python 3.11+ `asyncio.timeout` only arms a timer,
    where `asyncio.wait_for` wraps the awaitable in a task of its own: two per request on the hot path."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout_s):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout=timeout_s)


def _wire(item: Item) -> Dict[str, Any]:
    return {"id": item.id, "text": item.text, "image": item.image}


def _error(status: int, code: str, message: str, details: Optional[list] = None,
           headers: Optional[Dict[str, str]] = None) -> JSONBody:
    return JSONBody({"error": {"code": code, "message": message, "details": details}}, status_code=status,
                    headers=headers)


def _attach_explanations(items: List[Item], results: List[Dict[str, Any]], explained: List[Any]) -> None:
    """Put each scored item's explanation (moderation.explain.Explanation) into its result as `explanation`:
    the words behind each actioned category, under OpenAI's category names; null where there is nothing to explain
    (allowed posts, items that could not be scored)."""
    found = iter(explained)
    for item, result in zip(items, results):
        e = next(found) if item.ok else None
        words = e.categories if e is not None and result["error_code"] is None else {}
        if not words or result["action"] not in ("review", "block"):
            result["explanation"] = None
            continue
        result["explanation"] = {
            "method": e.method, "span_words": e.span_words, "text": e.text,
            "words": {openai_name(c): [{"word": w.word, "span": list(w.span), "weight": round(w.weight, 4)} for w in ws]
                      for c, ws in words.items()}}


class ModerationIngress:
    """The HTTP front: checks auth and limits, parses requests, sends the good items to the model.

    A plain class: `serving.app.make_ingress` makes it a Serve deployment and adds its routes, which call the
    `*_response` methods; `moderate` is the whole of POST /v1/moderations on a body (tests call it directly)."""

    def __init__(self, model: Optional[DeploymentHandle], limits: Optional[Dict[str, Any]] = None,
                 token_sha256: Optional[str] = None, request_timeout_s: float = 30.0,
                 model_args: Optional[Dict[str, Any]] = None, admit: Optional[int] = None,
                 image_url_allowlist: Optional[List[str]] = None, image_fetch_timeout_s: float = 5.0,
                 decision_log: Optional[Dict[str, Any]] = None, core: Optional[Any] = None) -> None:
        """Split topology: `model` is the ModerationModel handle. Fused: `model` is None and the model is
        built here from `model_args` (ModelCore's arguments), or `core` is an already-built ModelCore (or an object
        with its `score`, `explain` and `describe`: tests, benchmarks); at most `admit` requests are with the model
        at once (None: no bound) and any more are answered 503 at once."""
        if sum(x is not None for x in (model, model_args, core)) != 1:
            raise ValueError("give exactly one of a model handle (split topology), model_args or core (fused)")
        self.model = model
        self.core = ModelCore(**model_args) if model_args is not None else core
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
        self._id_prefix = os.urandom(8).hex()
        self._id_counter = itertools.count()
        # One writer per replica (its own files: host and pid in the names); see moderation.decision_log. Rows are
        # written by one thread of their own, in request order, so that the answer never waits for the disk.
        self.decision_log = DecisionLog(decision_log) if decision_log else None
        self.decision_log_errors = 0
        self._log_writer: Optional[ThreadPoolExecutor] = None

    def _next_request_id(self) -> str:
        """A request id unique across replicas and restarts: 64 random bits drawn once per replica, then a counter
        (a uuid4 per request costs a system call for its randomness)."""
        return f"modr-{self._id_prefix}{next(self._id_counter):08x}"

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
            return await _within(result, timeout_s) if asyncio.iscoroutine(result) else result
        response = getattr(self.model, method).remote(*args)
        try:
            return await _within(_wait(response), timeout_s)
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
            explained: List[Any] = []
            if not good:
                scored = []
            elif request.explain:
                explained = await self._admitted("explain", [_wire(it) for it in good])
                scored = [e.result for e in explained]
            else:
                scored = await self.score([_wire(it) for it in good])
            results = format_results(items, scored, info["categories"])
            if request.explain:
                _attach_explanations(items, results, explained)
        except RequestRejected as exc:
            return exc.status, exc.body()
        except (BackPressureError, Overloaded):
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
            "id": self._next_request_id(),
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
        """Hand the request's decisions to the decision log's writer thread (rows written in request order); a
        failing log never fails the request. `flush_decision_log` waits for what was handed over."""
        if self._log_writer is None:
            self._log_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decision-log")
        self._log_writer.submit(self._write_decisions, items, scored, info, latency_ms, request_id)

    def _write_decisions(self, items: List[Item], scored: List[Any], info: Dict[str, Any], latency_ms: float,
                         request_id: str) -> None:
        try:
            self.decision_log.log_request(items, scored, info["categories"], latency_ms=latency_ms,
                                          request_id=request_id, model_version=info["model_version"],
                                          thresholds_version=info["thresholds_version"])
        except Exception as exc:  # noqa: BLE001 - logged for the operator, the answer still goes out
            self.decision_log_errors += 1
            logger.warning("decision log write failed (%d so far): %s", self.decision_log_errors, exc)

    def flush_decision_log(self) -> int:
        """Wait until every decision handed to the writer thread is written; returns the write failures so far."""
        if self._log_writer is not None:
            self._log_writer.submit(lambda: None).result()
        return self.decision_log_errors

    def close(self) -> None:
        """Write what the decision log still holds and stop its thread (Serve calls __del__ at replica shutdown)."""
        if self._log_writer is not None:
            self._log_writer.shutdown(wait=True)
            self._log_writer = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the executor may be gone already
            pass

    async def _fetch_images(self, items: List[Item]) -> List[Item]:
        """Fetch the allow-listed image URLs of a request concurrently; a failed fetch fails its item only."""
        import httpx  # deferred: only requests with image URLs need an HTTP client

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
        Overloaded when `admit` requests are already with the model (split: Ray's queue limit does that)."""
        return await self._admitted("score", posts)

    async def _admitted(self, method: str, posts: List[Dict[str, Any]]) -> List[Any]:
        """Call the model's `method` (score, explain) on wire posts under the fused replica's admission bound."""
        if self.core is None:
            return await self._model_call(method, posts)
        if self._admit is not None and self._with_model >= self._admit:
            raise Overloaded()
        self._with_model += 1
        try:
            return await self._model_call(method, posts)
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

    # --- what the routes answer (the routes themselves: serving.app.make_ingress) ---

    async def readyz_response(self) -> JSONBody:
        """GET /readyz: 200 when the model replica is loaded and answers, 503 otherwise."""
        ok, body = await self.ready()
        return JSONBody(body, status_code=200 if ok else 503)

    async def model_response(self, authorization: Optional[str]) -> JSONBody:
        """GET /v1/model: model version, categories, thresholds, batching settings and request limits."""
        start = time.perf_counter()
        if not self.authorized(authorization):
            status, response = 401, _error(401, "unauthorized", "missing or wrong bearer token",
                                           headers={"WWW-Authenticate": "Bearer"})
        else:
            try:
                status, response = 200, JSONBody(await self.model_info())
            except (BackPressureError, Overloaded):
                status, response = 503, _error(503, "overloaded", "the model is at capacity; retry after a short wait")
            except Exception as exc:  # noqa: BLE001
                status, response = 503, _error(503, "not_ready", f"the model does not answer ({type(exc).__name__})")
        self.metrics.request("/v1/model", status, (time.perf_counter() - start) * 1000)
        return response

    async def moderations_response(self, request: Request) -> JSONBody:
        """POST /v1/moderations: the body read within its limits, `moderate`, and the status's headers."""
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
        return JSONBody(payload, status_code=status, headers=headers)

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
            await _within(receive(), timeout)
        except asyncio.TimeoutError:
            raise RequestRejected(408, "body_timeout", f"the request body did not arrive within {timeout:g} s; "
                                  "send it at once") from None
        return bytes(body)
