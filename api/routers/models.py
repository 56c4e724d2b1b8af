"""/api/v1/models: what serves each family, its versions and metrics, and the alias history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from api.db.models import AliasEventRepository
from api.deps import PoolDep, PrincipalDep, require_scope
from api.errors import ProblemError, problems
from contracts import FAMILIES, ModelVersion, Predictor, model_name

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


def _predictor(request: Request) -> Predictor:
    predictor = request.app.state.predictor
    if predictor is None:
        raise ProblemError(503, "model_not_deployed", "no model serving is configured")
    return predictor


@router.get("", response_model=list[FamilyOut], responses=problems(503))
async def list_models(
    pool: PoolDep, principal: PrincipalDep, predictor: Annotated[Predictor, Depends(_predictor)]
) -> list[FamilyOut]:
    """Families with their versions, aliases, A/B weights, key metrics and alias history."""
    history = AliasEventRepository(pool)
    out = []
    for family in FAMILIES:
        routing = await predictor.routing(family)
        catalogue = await predictor.catalogue(family)
        moves = await history.history(model_name(family), limit=HISTORY_LIMIT)
        out.append(
            FamilyOut(
                family=family,
                champion=routing.champion,
                challenger=routing.challenger,
                challenger_weight=routing.challenger_weight,
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
