"""The ingress deployment: the FastAPI app from `api.create_app`, with predictions routed
straight to the family deployments (serving.router) and its per-replica metrics on Ray's
metrics export (serving.metrics), so those of every ingress replica add up."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from api.settings import Settings
from serving.metrics import RayMetricsBackend
from serving.router import RayPredictor


@serve.deployment(name="StockCopilotIngress")
@serve.ingress()
class StockCopilotIngress:
    def __init__(self, settings: Settings, families: dict[str, DeploymentHandle]) -> None:
        self._settings = settings
        self._families = families

    def __serve_build_asgi_app__(self) -> Any:
        from api.app import create_app
        from api.logging import configure_logging

        configure_logging(
            self._settings.log_level, self._settings.log_json, self._settings.log_file
        )
        # Serve's proxy echoes the request id (the one our app adopts) on every response
        settings = self._settings.model_copy(update={"echo_request_id": False})
        return create_app(settings, RayPredictor(self._families), RayMetricsBackend())
