"""The whole Serve graph in one typed builder: Ingress → ABRouter → family deployments.

```
StockCopilotIngress (FastAPI from api.create_app)
  └─ ABRouter (sticky variant chosen by the ingress; dispatch + routing table)
       ├─ LSTMForecaster ─┐
       ├─ TransformerForecaster ─┤◄── EnsembleForecaster (members through handles)
       ├─ HybridForecaster ─┘
       └─ EnsembleForecaster
```
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serving.config import ServeAppConfig
from serving.deployments import (
    ABRouter,
    EnsembleForecaster,
    HybridForecaster,
    LSTMForecaster,
    StockCopilotIngress,
    TransformerForecaster,
)


def build_app(config: ServeAppConfig) -> Application:
    settings = config.settings
    members = {
        family: deployment.options(**config.family(family).deployment_options()).bind(settings)
        for family, deployment in (
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
