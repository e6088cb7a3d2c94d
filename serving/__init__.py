"""The real-time moderation endpoint on Ray Serve.

    serving.schemas   pydantic models: the app builder's typed arguments, the request and response bodies
    serving.parsing   request body -> posts with per-item errors (no Ray, no FastAPI: unit-testable)
    serving.model_core  the model side: one Scorer, posts batched with @serve.batch (`ModelCore`)
    serving.ingress   the HTTP front as a plain class (`ModerationIngress`): auth, limits, parsing, the answer
    serving.app       the two deployments, the ingress's routes (`make_ingress`) and `build_app(args)`
    serving.batch_engine  the `ray` engine of `moderation score` (serving.batch_ray: Ray Data)
    serving.cli       `moderation serve`
    serving.loadtest  a light asyncio + httpx load generator (closed and open loop), loopback only

Nothing here is imported by `moderation/`; importing this package starts nothing.

Importing it does pin Ray to loopback for this process: Ray decides at *its* import whether "127.0.0.1" means
the loopback address or the host's address (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`), so the variable must be set
before anything imports `ray`. Every module that imports ray lives in this package, so setting it here, at the
package's import, comes first whatever the entry point. `serving.local_ray.local_ray` checks it took effect.
"""

from __future__ import annotations

import os

#: Set before any `import ray` (see above). Forced, not defaulted: this project's Ray is loopback-only.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.update(RAY_LOOPBACK_ENV)
