"""/api/v1/predictions: quantile forecasts as price bands and a probability of going up."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CallerKeyDep, PredictionsDep, require_scope
from api.errors import problems
from api.routers.stocks import TickerPath
from api.schemas import Day, RequestModel
from contracts import DEFAULT_FAMILY, FAMILIES, Family

router = APIRouter(
    prefix="/api/v1/predictions",
    tags=["predictions"],
    dependencies=[require_scope("read:predictions")],
)


class PriceQuantiles(BaseModel):
    p10: float
    p50: float
    p90: float


class LogReturnQuantiles(BaseModel):
    q10: float
    q50: float
    q90: float


class ModelRef(BaseModel):
    family: str
    version: str
    variant: str


class Skill(BaseModel):
    skill_vs_rw: float = Field(description="walk-forward 1 - pinball/pinball(random walk)")
    dm_pvalue: float
    coverage_80: float
    verdict: str
    reference: str | None = Field(
        default=None, description="the strongest classical baseline, picked on validation"
    )
    skill_vs_reference: float | None = Field(
        default=None, description="walk-forward 1 - pinball/pinball(reference)"
    )
    dm_pvalue_vs_reference: float | None = Field(
        default=None, description="one-sided Diebold-Mariano p-value against the reference"
    )


class Prediction(BaseModel):
    ticker: str
    as_of: date
    horizon: int
    last_close: float
    quantiles: PriceQuantiles
    log_return_quantiles: LogReturnQuantiles
    prob_up: float = Field(ge=0, le=1)
    model: ModelRef
    skill: Skill | None


class BatchRequest(RequestModel):
    tickers: list[Annotated[str, Field(min_length=1, max_length=15)]] = Field(
        min_length=1, max_length=100
    )
    horizon: Literal[1, 5, 20] = 5
    model: Family = DEFAULT_FAMILY
    as_of: Day | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"tickers": ["AAPL", "KO", "XOM"], "horizon": 5, "model": DEFAULT_FAMILY}]
        }
    )


class BatchResponse(BaseModel):
    predictions: list[Prediction]


@router.get("/{ticker}", response_model=Prediction, responses=problems(503))
async def predict(
    service: PredictionsDep,
    caller: CallerKeyDep,
    ticker: TickerPath,
    horizon: Annotated[int, Query(description="trading days: 1, 5 or 20")] = 5,
    model: Annotated[str, Query(description=", ".join(FAMILIES))] = DEFAULT_FAMILY,
    as_of: Annotated[Day | None, Query(description="predict from bars up to this date")] = None,
) -> Prediction:
    """Forecast one ticker: 10/50/90 % price quantiles and P(up), naming the model version."""
    (result,) = await service.predict_many([ticker], horizon, model, caller, as_of)
    return Prediction(**result)


class Outcome(BaseModel):
    date: date
    realised_log_return: float
    pinball_loss: float
    inside_80: bool
    direction_right: bool


class PastPrediction(BaseModel):
    as_of: date
    horizon: int
    model: ModelRef
    live: bool = Field(
        description="made from the newest bar at the time; only live forecasts count in A/B "
        "reports, since a past as-of forecast could be asked for after its outcome was known"
    )
    log_return_quantiles: LogReturnQuantiles
    outcome: Outcome | None = Field(description="null until the horizon's bar has arrived")


class PredictionHistory(BaseModel):
    ticker: str
    predictions: list[PastPrediction]


@router.get("/{ticker}/history", response_model=PredictionHistory)
async def prediction_history(
    service: PredictionsDep,
    ticker: TickerPath,
    horizon: Annotated[int | None, Query(description="1, 5 or 20")] = None,
    model: Annotated[str | None, Query(description="model family")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> PredictionHistory:
    """Past predictions for a ticker with what actually happened, newest first."""
    name, rows = await service.history(ticker, horizon, model, limit)
    return PredictionHistory(ticker=name, predictions=[PastPrediction(**r) for r in rows])


@router.post("/batch", response_model=BatchResponse, responses=problems(404, 503))
async def predict_batch(
    service: PredictionsDep, caller: CallerKeyDep, body: BatchRequest
) -> BatchResponse:
    """Forecast up to 100 tickers with one model call."""
    results = await service.predict_many(body.tickers, body.horizon, body.model, caller, body.as_of)
    return BatchResponse(predictions=[Prediction(**r) for r in results])
