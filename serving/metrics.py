"""Application metrics of the endpoint, exported through Ray Serve's metrics (Prometheus format).

Ray adds the `deployment`, `replica` and `application` tags; Ray exports every metric with the `ray_`
prefix on each node's metrics port. Ray Serve's own metrics come on top (`ray_serve_num_http_requests`,
`ray_serve_http_request_latency_ms`, `ray_serve_deployment_queued_queries`,
`ray_serve_batch_size` / `ray_serve_batch_wait_time_ms` from @serve.batch, ...). See docs/serving.md.
"""

from __future__ import annotations

from ray.serve import metrics

# Milliseconds: from a 1 ms cache-hot text to a 10 s overloaded image batch.
LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class IngressMetrics:
    """Requests, their latency and status, and the items they carried (scored or errored, by error code)."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "moderation_requests_total", description="HTTP requests answered by the moderation ingress, by route and status.",
            tag_keys=("route", "status"))
        self.latency = metrics.Histogram(
            "moderation_request_latency_ms", description="Time from request received to response ready, in ms.",
            boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("route",))
        self.items = metrics.Counter(
            "moderation_items_total", description="Posts received, by outcome (scored, error).", tag_keys=("outcome",))
        self.item_errors = metrics.Counter(
            "moderation_item_errors_total", description="Posts that could not be scored, by error code.",
            tag_keys=("error_code",))
        self.flagged = metrics.Counter(
            "moderation_flagged_total", description="Posts flagged, by category.", tag_keys=("category",))

    def request(self, route: str, status: int, latency_ms: float) -> None:
        self.requests.inc(1, tags={"route": route, "status": str(status)})
        self.latency.observe(latency_ms, tags={"route": route})

    def results(self, results: list[dict]) -> None:
        """Count a request's items: one increment per tag value, not per item (each costs a few microseconds)."""
        scored = 0
        errors: dict[str, int] = {}
        flagged: dict[str, int] = {}
        for r in results:
            if r["error_code"] is None:
                scored += 1
                for category, hit in r["categories"].items():
                    if hit:
                        flagged[category] = flagged.get(category, 0) + 1
            else:
                errors[r["error_code"]] = errors.get(r["error_code"], 0) + 1
        if scored:
            self.items.inc(scored, tags={"outcome": "scored"})
        if errors:
            self.items.inc(sum(errors.values()), tags={"outcome": "error"})
        for code, n in errors.items():
            self.item_errors.inc(n, tags={"error_code": code})
        for category, n in flagged.items():
            self.flagged.inc(n, tags={"category": category})


class ModelMetrics:
    """Batches the model replica ran: their size in posts and their compute time."""

    def __init__(self) -> None:
        self.batch_size = metrics.Histogram(
            "moderation_batch_size", description="Posts per model batch.", boundaries=BATCH_BOUNDARIES)
        self.batch_latency = metrics.Histogram(
            "moderation_batch_latency_ms", description="Time to prepare and score one batch, in ms.",
            boundaries=LATENCY_BOUNDARIES_MS)
        self.posts = metrics.Counter("moderation_model_posts_total", description="Posts scored by the model replica.")
        self.rescored = metrics.Counter(
            "moderation_model_rescored_total",
            description="Posts scored again in fp32 by a guarded precision (their bf16 score was near a threshold).")

    def batch(self, size: int, latency_ms: float, rescored: int = 0) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(latency_ms)
        self.posts.inc(size)
        if rescored:
            self.rescored.inc(rescored)
