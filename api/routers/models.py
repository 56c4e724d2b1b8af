"""/api/v1/models: what serves each family, its versions and metrics, and the alias history."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from api.deps import PoolDep, PrincipalDep, require_scope
from api.errors import ProblemError, problems
from api.routers.predictions import HorizonParam
from api.services.model_history import alias_history
from api.services.outcomes import AbReport, live_ab
from contracts import CHALLENGER, CHAMPION, FAMILIES, HORIZONS, Family, ModelVersion, Predictor

router = APIRouter(
    prefix="/api/v1/models", tags=["models"], dependencies=[require_scope("read:predictions")]
)
HISTORY_LIMIT = 20


class AliasMoveOut(BaseModel):
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str | None = Field(description="who moved it (an operator's login): administrators only")
    reason: str
    at: datetime | None


class FamilyOut(BaseModel):
    family: str
    champion: str | None
    challenger: str | None
    challenger_weight: float
    versions: list[ModelVersion]
    alias_history: list[AliasMoveOut]


async def _predictor(request: Request) -> Predictor:
    predictor = request.app.state.predictor
    if predictor is None:
        raise ProblemError(503, "model_not_deployed", "no model serving is configured")
    return predictor


@router.get("", response_model=list[FamilyOut], responses=problems(503))
async def list_models(
    request: Request,
    pool: PoolDep,
    principal: PrincipalDep,
    predictor: Annotated[Predictor, Depends(_predictor)],
) -> list[FamilyOut]:
    """Families with their versions, aliases, A/B weights, key metrics and alias history."""
    weights = request.app.state.challenger_weights
    out = []
    for family in FAMILIES:
        routing = await predictor.routing(family)
        catalogue = await predictor.catalogue(family)
        moves = await alias_history(pool, family, HISTORY_LIMIT)
        out.append(
            FamilyOut(
                family=family,
                champion=routing.champion,
                challenger=routing.challenger,
                challenger_weight=await weights.share(routing),
                versions=catalogue.versions,
                alias_history=[
                    AliasMoveOut(
                        alias=m.alias,
                        from_version=m.from_version,
                        to_version=m.to_version,
                        actor=m.actor if principal.is_admin else None,
                        reason=m.reason,
                        at=m.at,
                    )
                    for m in moves
                ],
            )
        )
    return out


class VariantAbOut(BaseModel):
    versions: list[str] = Field(description="the versions whose live forecasts were compared")
    n: int = Field(description="resolved live forecasts of this variant at this horizon")
    dates: int = Field(description="the as-of dates those forecasts span")
    mean_pinball_loss: float | None = Field(
        description="over the compared sample (see `method`); null when the variants share no date"
    )


class HorizonAbOut(BaseModel):
    horizon: int
    method: str = Field(
        description="paired: both variants' forecasts of the same (as_of, ticker); per-date "
        "means: each variant's mean loss on the dates both served"
    )
    n_compared: int = Field(description="forecast pairs, or shared dates, the test compared")
    dates_compared: int
    champion: VariantAbOut
    challenger: VariantAbOut
    dm_statistic: float | None = Field(
        description="Diebold-Mariano, challenger minus champion loss (negative: the challenger "
        "loses less); null while there is too little evidence"
    )
    p_value: float | None
    recommendation: str


class LiveAbOut(BaseModel):
    family: str
    champion: str | None = Field(description="the version under the champion alias now")
    challenger: str | None = Field(description="the version under the challenger alias now")
    challenger_weight: float = Field(
        description="the share of callers routed to the challenger, as stored (`stockcopilot ab "
        "set`); nobody is routed there while no version holds the challenger alias"
    )
    horizons: list[HorizonAbOut]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _horizon_out(report: AbReport) -> HorizonAbOut:
    def variant(name: str, mean_loss: float) -> VariantAbOut:
        return VariantAbOut(
            versions=report.versions[name],
            n=report.forecasts[name],
            dates=report.dates[name],
            mean_pinball_loss=_finite(mean_loss),
        )

    return HorizonAbOut(
        horizon=report.horizon,
        method=report.method,
        n_compared=report.n_pairs,
        dates_compared=report.n_dates,
        champion=variant(CHAMPION, report.mean_loss_champion),
        challenger=variant(CHALLENGER, report.mean_loss_challenger),
        dm_statistic=_finite(report.dm_stat),
        p_value=_finite(report.p_value),
        recommendation=report.recommendation,
    )


@router.get("/{family}/ab", response_model=LiveAbOut, responses=problems(503))
async def live_ab_report(
    pool: PoolDep,
    predictor: Annotated[Predictor, Depends(_predictor)],
    family: Family,
    horizon: Annotated[
        HorizonParam | None, Query(description="trading days (default: all)")
    ] = None,
) -> LiveAbOut:
    """The live A/B test of the family's champion and challenger, as `stockcopilot ab report`.

    Resolves forecasts whose horizon has passed, then compares the live losses of the versions
    under the champion and challenger aliases now (earlier holders of an alias are left out).
    """
    routing = await predictor.routing(family)
    result = await live_ab(
        pool,
        family,
        HORIZONS if horizon is None else [horizon],
        {CHAMPION: routing.champion, CHALLENGER: routing.challenger},
    )
    return LiveAbOut(
        family=family,
        champion=routing.champion,
        challenger=routing.challenger,
        challenger_weight=result.challenger_weight,
        horizons=[_horizon_out(report) for report in result.reports],
    )
