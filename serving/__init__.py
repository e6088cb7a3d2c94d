"""The real-time moderation endpoint on Ray Serve.

    serving.schemas   pydantic models: the app builder's typed arguments, the request and response bodies
    serving.parsing   request body -> posts with per-item errors (no Ray, no FastAPI: unit-testable)
    serving.app       the model deployment (@serve.batch), the FastAPI ingress, and `build_app(args)`
    serving.cli       `moderation serve`
    serving.loadtest  a light asyncio + httpx load generator (closed and open loop), loopback only

Nothing here is imported by `moderation/`; importing this package starts nothing.
"""
