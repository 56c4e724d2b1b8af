"""The seam between the API and model serving.

`api` never imports Ray: the serving layer passes a Ray-handle implementation, tests and
`stockcopilot up --no-ray` pass an in-process one built from the same registered models. Inputs
travel as plain closes so model replicas need no database access of their own.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

from pydantic import BaseModel, Field

EPOCH = date(1970, 1, 1).toordinal()
FAMILIES = ("lstm", "transformer", "hybrid", "ensemble")
HORIZONS = (1, 5, 20)


def model_name(family: str) -> str:
    """The registered MLflow model serving a family."""
    return f"stockcopilot-{family}"


class SeriesInput(BaseModel):
    """One ticker's recent closes, oldest first, ending at the as-of bar.

    Dates travel as day numbers (days since 1970-01-01): a batch carries tens of thousands of
    them through two Ray hops, and plain ints cost a fraction of date objects to build, pickle
    and turn into a date index.
    """

    ticker: str
    sector: str | None = None
    days: list[int] = Field(min_length=1, description="bar dates, days since 1970-01-01")
    closes: list[float] = Field(min_length=1)

    @classmethod
    def of(
        cls, ticker: str, dates: list[date], closes: list[float], sector: str | None = None
    ) -> SeriesInput:
        days = [d.toordinal() - EPOCH for d in dates]
        return cls(ticker=ticker, sector=sector, days=days, closes=closes)


class ForecastRequest(BaseModel):
    family: str
    variant: str = Field(description="champion or challenger, chosen by the A/B router")
    series: list[SeriesInput]


class Forecast(BaseModel):
    """Quantiles of the log return over `horizon` trading days after `as_of`."""

    ticker: str
    as_of: date
    horizon: int
    q10: float
    q50: float
    q90: float


class HorizonSkill(BaseModel):
    skill_vs_rw: float
    dm_pvalue: float
    coverage_80: float
    verdict: str
    reference: str | None = Field(
        default=None, description="the strongest classical baseline the model was compared with"
    )
    skill_vs_reference: float | None = None
    dm_pvalue_vs_reference: float | None = None


class ForecastBatch(BaseModel):
    family: str
    version: str
    variant: str
    forecasts: list[Forecast]
    skill: dict[int, HorizonSkill] = Field(default_factory=dict)
    shadow: ForecastBatch | None = Field(
        default=None,
        description="the previous champion's forecasts for the same request while a newly "
        "promoted champion is on probation; logged for the live comparison, never served",
    )


class Routing(BaseModel):
    """Who serves a family now: versions per variant and the challenger's traffic share."""

    family: str
    champion: str | None
    challenger: str | None = None
    challenger_weight: float = 0.0

    def version_of(self, variant: str) -> str | None:
        return self.challenger if variant == "challenger" else self.champion


class ModelVersion(BaseModel):
    version: str
    aliases: list[str]
    metrics: dict[str, float] = Field(description="walk-forward headline metrics of its run")


class FamilyCatalogue(BaseModel):
    family: str
    versions: list[ModelVersion]


class ModelUnavailable(RuntimeError):
    """The family (or variant) has no loadable model right now; the message says why."""


class Predictor(Protocol):
    async def routing(self, family: str) -> Routing: ...

    async def forecast(self, request: ForecastRequest) -> ForecastBatch: ...

    async def catalogue(self, family: str) -> FamilyCatalogue: ...
