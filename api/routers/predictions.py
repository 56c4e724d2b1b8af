"""/api/v1/predictions: quantile forecasts as price bands and a probability of going up."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from api.deps import CallerKeyDep, ClockDep, PredictionsDep, require_scope
from api.errors import problems
from api.routers.stocks import TickerPath
from api.schemas import Day, RequestModel
from api.services.predictions import LogReturnQuantiles, ModelRef, Prediction, sent
from contracts import DEFAULT_FAMILY, Family, Horizon

router = APIRouter(
    prefix="/api/v1/predictions",
    tags=["predictions"],
    dependencies=[require_scope("read:predictions")],
)


class BatchRequest(RequestModel):
    tickers: list[Annotated[str, Field(min_length=1, max_length=15)]] = Field(
        min_length=1, max_length=100
    )
    horizon: Horizon = 5
    model: Family = DEFAULT_FAMILY
    as_of: Day | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"tickers": ["AAPL", "KO", "XOM"], "horizon": 5, "model": DEFAULT_FAMILY}]
        }
    )


class BatchResponse(BaseModel):
    predictions: list[Prediction]


def _number(value: object) -> object:
    """A query string's digits as the int the shared `Horizon` type expects."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


HorizonParam = Annotated[Horizon, BeforeValidator(_number)]


def _sent_as_is(document: str) -> Response:
    """JSON validated and serialised once, when the prediction was made (and cached as such)."""
    return Response(document, media_type="application/json")


@router.get("/{ticker}", response_model=Prediction, responses=problems(503))
async def predict(
    service: PredictionsDep,
    caller: CallerKeyDep,
    clock: ClockDep,
    ticker: TickerPath,
    horizon: Annotated[HorizonParam, Query(description="trading days")] = 5,
    model: Annotated[Family, Query(description="model family")] = DEFAULT_FAMILY,
    as_of: Annotated[Day | None, Query(description="predict from bars up to this date")] = None,
) -> Response:
    """Forecast one ticker: 10/50/90 % price quantiles and P(up), naming the model version."""
    (document,) = await service.predict_json([ticker], horizon, model, caller, as_of)
    return _sent_as_is(sent(document, clock))


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
    horizon: Annotated[HorizonParam | None, Query(description="trading days")] = None,
    model: Annotated[Family | None, Query(description="model family")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> PredictionHistory:
    """Past predictions for a ticker with what actually happened, newest first."""
    name, rows = await service.history(ticker, horizon, model, limit)
    return PredictionHistory(ticker=name, predictions=[PastPrediction(**r) for r in rows])


@router.post("/batch", response_model=BatchResponse, responses=problems(404, 503))
async def predict_batch(
    service: PredictionsDep, caller: CallerKeyDep, clock: ClockDep, body: BatchRequest
) -> Response:
    """Forecast up to 100 tickers with one model call."""
    documents = await service.predict_json(
        body.tickers, body.horizon, body.model, caller, body.as_of
    )
    return _sent_as_is(f'{{"predictions":[{",".join(sent(d, clock) for d in documents)}]}}')
