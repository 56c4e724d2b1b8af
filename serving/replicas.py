"""Model replicas: one Ray Serve deployment per model family, and the ensemble.

Each replica serves its family's vetted versions (see serving.alias_watch) through the same
in-process predictor that tests and `--no-ray` use. A request names the version the ingress
routed it to; the replica serves exactly that version and never re-reads the routing. While a
version is on probation, its calls are timed and counted, and a failed call is answered by the
version it replaced. Errors reach Sentry from every replica, scrubbed as the ingress's are.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from ray import serve
from ray.serve import Deployment
from ray.serve.handle import DeploymentHandle

from api.observability import init_sentry
from api.settings import Settings
from contracts import (
    FAMILIES,
    FAMILY_KINDS,
    FamilyCatalogue,
    ForecastBatch,
    ForecastRequest,
    Routing,
)
from serving.alias_watch import AliasWatch
from serving.local import LocalPredictor, MemberPredictions

log = structlog.get_logger(__name__)


class FamilyForecaster:
    """One family's replica: its predictor, the alias watch that pins what it serves, and the
    probation guard on every forecast."""

    family = "base"
    runs_networks = True  # the ensemble only combines member outputs: no torch in its process

    def __init__(self, settings: Settings) -> None:
        from training import registry

        init_sentry(settings)  # the ingress's init (api.observability): same DSN, same scrubbing
        if self.runs_networks:
            import torch

            torch.set_num_threads(1)  # see training.fit: one thread is much faster on small nets
        client = registry.configure(settings.mlflow_tracking_uri)
        self.predictor = LocalPredictor(client, alias_ttl_s=settings.alias_poll_s)
        self.watch = AliasWatch(self.family, client, self.predictor, settings)

    async def routing(self) -> Routing:
        """The versions this replica has vetted (what the ingress routes requests to)."""
        return await self.predictor.routing(self.family)

    async def forecast(self, request: ForecastRequest) -> ForecastBatch:
        return await self._guarded(request, None)

    async def _guarded(
        self, request: ForecastRequest, members: MemberPredictions | None
    ) -> ForecastBatch:
        """Forecast; while the requested version is on probation, time it, count its failures,
        answer a failed call from the version it replaced, and roll it back on a breach."""
        version = request.version
        if version is None:  # a caller that routed nothing itself: what this replica pinned
            version = (await self.routing()).version_of(request.variant)
        trial = self.watch.trial_for(request.variant, version)
        if trial is None:
            return await self.predictor.forecast(request, members, version)
        if trial.verdict is not None and trial.fallback is not None:  # rollback under way
            return await self.predictor.forecast(request, members, trial.fallback)
        if not trial.watching:
            return await self.predictor.forecast(request, members, version)
        started = time.perf_counter()
        try:
            batch = await self.predictor.forecast(request, members, version)
        except Exception as exc:
            trial.record(False, time.perf_counter() - started)
            self.watch.judge(trial)
            if trial.fallback is None:
                raise
            log.warning(
                "probation_call_failed",
                family=self.family,
                version=version,
                answered_by=trial.fallback,
                error=str(exc)[:200],
            )
            return await self.predictor.forecast(request, members, trial.fallback)
        trial.record(True, time.perf_counter() - started)
        self.watch.judge(trial)
        return batch

    async def catalogue(self) -> FamilyCatalogue:
        return await self.predictor.catalogue(self.family)

    async def forecast_with(self, model_uri: str, request: ForecastRequest) -> Any:
        """Predictions of one exact logged model (the ensemble's fitted members)."""
        return await self.predictor.predict_uri(model_uri, request)


class EnsembleForecaster(FamilyForecaster):
    """Weights from the registered ensemble; member predictions come from the member deployments."""

    runs_networks = False

    def __init__(self, settings: Settings, members: dict[str, DeploymentHandle]) -> None:
        super().__init__(settings)
        self._members = members

    async def forecast(self, request: ForecastRequest) -> ForecastBatch:
        return await self._guarded(request, self._member_predictions)

    async def _member_predictions(
        self,
        family: str,
        model_uri: str,
        request: ForecastRequest,
    ) -> Any:
        return await self._members[family].forecast_with.remote(model_uri, request)


def deployment_name(family: str) -> str:
    """The Serve deployment of a family: `GarchForecaster`, `LstmForecaster`, ..."""
    return f"{family.title()}Forecaster"


def _deployment(family: str) -> Deployment:
    """A family's deployment, from its kind alone: classical replicas never import torch, the
    ensemble gets its members' handles. Registered as a module attribute, so Ray pickles the
    class by reference."""
    kind = FAMILY_KINDS[family]
    base = EnsembleForecaster if kind == "ensemble" else FamilyForecaster
    name = deployment_name(family)
    cls = type(
        name,
        (base,),
        {
            "family": family,
            "runs_networks": kind == "network",
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"The {family} family's replica ({kind}).",
        },
    )
    globals()[name] = cls
    return serve.deployment(name=name)(cls)


DEPLOYMENTS: dict[str, Deployment] = {family: _deployment(family) for family in FAMILIES}
