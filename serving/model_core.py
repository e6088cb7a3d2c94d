"""The model side of the endpoint: `ModelCore` holds one Scorer and scores posts in batches (@serve.batch).

It is the class of the split topology's model deployment (serving.app.ModerationModel) and lives inside the
ingress replica in the fused one (serving.ingress). Importing this module keeps the replica's gRPC server on
loopback (every replica of either deployment imports it).
"""

import asyncio
import gc
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

from ray import serve

from moderation.inputs import InputLimits
from moderation.policy import Policy
from moderation.schema import Post
from serving.local_ray import bind_replica_grpc_to_loopback
from serving.metrics import ModelMetrics
from serving.schemas import BatchConfig, RequestLimits

bind_replica_grpc_to_loopback()  # in every replica process, before Serve opens its gRPC port

logger = logging.getLogger("ray.serve")

MODEL_DEPLOYMENT = "ModerationModel"


def public_description(info: Any) -> Any:
    """A description fit for HTTP clients: no filesystem paths of the server (a `path` key is dropped; an absolute
    path among the values, e.g. a local encoder folder or checkpoint, is cut to its last component)."""
    if isinstance(info, dict):
        return {k: public_description(v) for k, v in info.items() if k != "path"}
    if isinstance(info, (list, tuple)):
        return [public_description(v) for v in info]
    if isinstance(info, str) and (info.startswith("~") or os.path.isabs(info)):
        return Path(info).name
    return info


class Overloaded(Exception):
    """The fused replica's model queue is full: answer 503 at once."""


class ModelCore:
    """Holds one Scorer and scores posts in batches that mix posts from concurrent requests.

    `score(posts)` is what the ingress calls (one call per HTTP request, through a handle in the split
    topology, in-process in the fused one); each post joins the batch queue on its own, so max_batch_size
    counts posts. Batch size and wait are the deployment's `user_config` (see `BatchConfig`), applied by
    `reconfigure` at start and whenever the config changes at run time.
    """

    def __init__(self, model_dir: Optional[str], device: str = "cpu", precision: str = "auto",
                 decode_workers: int = 2, torch_threads: int = 1, limits: Optional[Dict[str, Any]] = None,
                 ocr: str = "auto", ocr_with_image: bool = False, hash_lists: Optional[List[str]] = None,
                 onnx_text: str = "off") -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import torch  # deferred: torch (and the scorer with it) loads in the replica, not in the driver
        from moderation.scorer import Scorer

        # Ray sets the thread count from num_cpus only for some libraries; torch is told explicitly.
        torch.set_num_threads(max(1, torch_threads))
        req = RequestLimits.model_validate(limits or {})
        input_limits = InputLimits(max_text_chars=req.max_text_chars, max_image_bytes=req.max_image_bytes,
                                   max_image_pixels=req.max_image_pixels,
                                   max_image_aspect_ratio=req.max_image_aspect_ratio)
        opts = dict(batch_size=BatchConfig().max_batch_size, device=device, precision=precision,
                    limits=input_limits, num_workers=decode_workers, ocr=ocr, ocr_with_image=ocr_with_image,
                    hash_lists=list(hash_lists or []), onnx_text=onnx_text)
        self.scorer = Scorer.from_dir(model_dir, **opts) if model_dir else Scorer.default(**opts)
        self.torch_threads = torch.get_num_threads()
        self.batch_config = BatchConfig()
        self.warm_up_s = self._warm_up(self.batch_config.max_batch_size)
        # The model's objects (the lexical vocabularies, tokenizer, modules: ~570k tracked objects) live as long as
        # the replica, and a full garbage collection scanned them all: 0.4-0.5 s with the request waiting (measured
        # in-process, 2026-12-07). Frozen, the collector no longer looks at them (what was garbage goes first).
        gc.collect()
        gc.freeze()
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
        logger.info("model replica: %s; onnx_text %s", self.scorer.precision_choice.line(), self.scorer.onnx_text_choice)
        if not self.scorer.trained:
            logger.warning("serving an UNTRAINED model head (%s): scores are not judgements and nothing is flagged",
                           self.scorer.model_version)

    def _warm_up(self, batch_size: int) -> float:
        """Score one post and then a full batch of texts of different lengths, and forget them (the counters are
        restored): what a replica's first requests would otherwise pay (~1-2 s on a CPU: scikit-learn's import
        and the lexical vectorisers, the language model's load, the first forward of each path, PyTorch and
        ONNX Runtime). The replica reports healthy, and `/readyz` ready, only after it. Returns the seconds it took.
        Images (OCR) are not warmed: their first read still pays the OCR engine's start."""
        start = time.perf_counter()
        stats = dict(self.scorer.forward_stats)
        texts = ["warm-up: a short post", *("warm-up post with some more words in it " * (1 + 3 * i)
                                            for i in range(max(1, batch_size)))]
        self.scorer.score([Post(id="w0", text=texts[0])])
        self.scorer.score([Post(id=f"w{i}", text=t) for i, t in enumerate(texts[1:], 1)])
        self.scorer.forward_stats.update(stats)
        took = time.perf_counter() - start
        logger.info("model replica warmed up in %.2f s", took)
        return took

    def reconfigure(self, user_config: Dict[str, Any]) -> None:
        """Apply a new `BatchConfig` (batch size and wait, the policy) without restarting the replica.

        Raises PolicyError (the reconfigure fails, the old settings stay) for a policy that does not fit the model.
        """
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
        twice = self.scorer.forward_stats["rescored"]
        results = await loop.run_in_executor(self._compute, self._score_batch, posts)
        self.metrics.batch(len(posts), (time.perf_counter() - start) * 1000, self.scorer.forward_stats["rescored"] - twice)
        self.batches += 1
        self.posts += len(posts)
        self.largest_batch = max(self.largest_batch, len(posts))
        return results

    def _score_batch(self, posts: List[Dict[str, Any]]) -> List[Any]:
        # Posts from different requests share a batch and may share ids ("0" from OpenAI-shaped requests):
        # score them under their batch position so that the scorer's duplicate-id check does not fire.
        batch = [Post(id=str(i), text=p.get("text"), image=p.get("image")) for i, p in enumerate(posts)]
        results = self.scorer.score(batch)
        for result, post in zip(results, posts):
            result.id = post["id"]
        return results

    async def explain(self, posts: List[Dict[str, Any]], top_k: int = 5) -> List[Any]:
        """Score posts ({id, text, image}) and explain those sent to review or blocked (moderation.explain):
        one `Explanation` per post, in order. Runs on the model's thread, outside the batches (an explanation costs
        about one more model pass per post, pooled method); "occlusion" where the text encoder is not mean-pooled."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._compute, self._explain_posts, posts, top_k)

    def _explain_posts(self, posts: List[Dict[str, Any]], top_k: int) -> List[Any]:
        from moderation.explain import explain  # deferred: torch, in the replica only (as the scorer above)

        batch = [Post(id=str(i), text=p.get("text"), image=p.get("image")) for i, p in enumerate(posts)]
        try:
            explanations = explain(self.scorer, batch, top_k=top_k, method="pooled")
        except ValueError:  # refused before any work: the text encoder is not mean-pooled
            explanations = explain(self.scorer, batch, top_k=top_k, method="occlusion")
        for explanation, post in zip(explanations, posts):
            explanation.id = explanation.result.id = post["id"]
        return explanations

    def describe(self) -> Dict[str, Any]:
        """The scorer's description (without the server's filesystem paths) plus the serving settings in force."""
        return {**public_description(self.scorer.describe()), "batch": self.batch_config.model_dump(),
                "device": str(self.scorer.device),
                "precision": self.scorer.precision, "precision_choice": self.scorer.precision_choice.to_dict(),
                "torch_threads": self.torch_threads, "warm_up_s": round(self.warm_up_s, 3),
                "stats": {"batches": self.batches, "posts": self.posts, "largest_batch": self.largest_batch,
                          # guarded precisions: posts scored again in fp32 (0 in another)
                          "rescored": self.scorer.forward_stats["rescored"],
                          # posts whose text ran fp32 in ONNX Runtime (small batches: moderation.onnx_text)
                          "onnx_text": self.scorer.forward_stats["onnx"]}}
