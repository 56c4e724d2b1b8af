"""The whole Serve graph in one typed builder: Ingress → ABRouter → family deployments.

```
StockCopilotIngress (FastAPI from api.create_app)
  └─ ABRouter (sticky variant chosen by the ingress; dispatch + routing table)
       ├─ GarchForecaster ─┐
       ├─ LSTMForecaster ─┤
       ├─ TransformerForecaster ─┤◄── EnsembleForecaster (members through handles)
       ├─ HybridForecaster ─┘
       └─ EnsembleForecaster
```
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ray.serve import Application

from serving.config import ServeAppConfig
from serving.deployments import (
    ABRouter,
    EnsembleForecaster,
    GarchForecaster,
    HybridForecaster,
    LSTMForecaster,
    StockCopilotIngress,
    TransformerForecaster,
)
from training.local_ray import init_local_ray

# Request-path settings for a small single-node cluster: replica user code and the handle
# router run on the replica's own event loop instead of a thread hop each (two of the settings
# Ray Serve's RAY_SERVE_THROUGHPUT_OPTIMIZED profile changes). Safe here because every blocking
# call in our deployments (model forward, registry, file I/O) already runs in a worker thread.
SERVE_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}


def start_local_ray(trusted_proxies: Sequence[str] = (), **options: Any) -> Any:
    """`init_local_ray` with SERVE_ENV in every worker, and Serve's HTTP proxy believing
    X-Forwarded-For only from `trusted_proxies` (uvicorn's FORWARDED_ALLOW_IPS, which otherwise
    trusts loopback: any local client could pick its own rate-limit address)."""
    for name, value in SERVE_ENV.items():
        os.environ.setdefault(name, value)  # workers inherit the driver's environment
    os.environ["FORWARDED_ALLOW_IPS"] = ",".join(trusted_proxies)  # empty: trust no one
    return init_local_ray(**options)


def build_app(config: ServeAppConfig) -> Application:
    settings = config.settings
    members = {
        family: deployment.options(**config.family(family).deployment_options()).bind(settings)
        for family, deployment in (
            ("garch", GarchForecaster),
            ("lstm", LSTMForecaster),
            ("transformer", TransformerForecaster),
            ("hybrid", HybridForecaster),
        )
    }
    ensemble = EnsembleForecaster.options(**config.ensemble.deployment_options()).bind(
        settings, members
    )
    router = ABRouter.options(**config.router.deployment_options()).bind(
        settings, {**members, "ensemble": ensemble}
    )
    return StockCopilotIngress.options(**config.ingress.deployment_options()).bind(settings, router)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for `serve deploy` / `serve run` (`import_path: serving.app:app_builder`).

    `args` holds a ServeAppConfig; `settings` may be omitted to read them from the environment.
    """
    from api.settings import Settings

    raw = dict(args)
    raw.setdefault("settings", Settings().model_dump())
    return build_app(ServeAppConfig.model_validate(raw))
