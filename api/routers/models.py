"""/api/v1/models: what serves each family, its versions and metrics, and the alias history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from api.deps import PoolDep, PrincipalDep, require_scope
from api.errors import ProblemError, problems
from api.services.model_history import alias_history
from contracts import FAMILIES, ModelVersion, Predictor

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
