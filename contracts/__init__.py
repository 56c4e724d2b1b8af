"""The contract every layer shares: model families, horizons, aliases, registered-model names,
and the forecast request/response types with the `Predictor` protocol. Nothing of ours is
imported here; everything else imports from here.

Adding a model family is one entry in `Family` (and `FAMILY_KINDS`) plus its model code: every
list of families, every `Literal` in the API and every CLI choice derives from these.

`api` never imports Ray: the serving layer passes a Ray-handle `Predictor`, tests and
`stockcopilot up --no-ray` pass an in-process one built from the same registered models. Inputs
travel as plain closes so model replicas need no database access of their own.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal, Protocol, get_args

from pydantic import BaseModel, Field

EPOCH = date(1970, 1, 1).toordinal()

Family = Literal["garch", "lstm", "transformer", "hybrid", "ensemble"]
FAMILIES: tuple[str, ...] = get_args(Family)
# classical: fitted per ticker in seconds (training.classical); network: a Lightning model
# (training.models); ensemble: a weighted combination of the other families' quantiles
FAMILY_KINDS: dict[str, Literal["classical", "network", "ensemble"]] = {
    "garch": "classical",
    "lstm": "network",
    "transformer": "network",
    "hybrid": "network",
    "ensemble": "ensemble",
}
NETWORKS: tuple[str, ...] = tuple(f for f in FAMILIES if FAMILY_KINDS[f] == "network")
MEMBERS: tuple[str, ...] = tuple(f for f in FAMILIES if FAMILY_KINDS[f] != "ensemble")
# What a request that names no model gets: the family the walk-forward yardstick ranks first
# (reports/walkforward.md). No network has beaten the classical family, so GARCH serves.
DEFAULT_FAMILY: Family = "garch"

MARKET_TICKER = "SPX"  # the market every market-context feature is measured against

Horizon = Literal[1, 5, 20]
HORIZONS: tuple[int, ...] = get_args(Horizon)

Alias = Literal["champion", "challenger"]
ALIASES: tuple[str, ...] = get_args(Alias)
CHAMPION, CHALLENGER = ALIASES

if set(FAMILY_KINDS) != set(FAMILIES):
    raise RuntimeError("every family needs its kind in FAMILY_KINDS")


def model_name(family: str) -> str:
    """The registered MLflow model serving a family."""
    return f"stockcopilot-{family}"


def absolute_tracking_uri(uri: str) -> str:
    """The registry's location as every process must name it: a sqlite URI with an absolute
    path, resolved against this process's working directory (Ray workers and trials run in
    other directories, where a relative path names another file)."""
    if not uri.startswith("sqlite:///"):
        return uri
    path = Path(uri.removeprefix("sqlite:///"))
    return uri if path.is_absolute() else f"sqlite:///{path.resolve()}"


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
    family: Family
    variant: Alias = Field(description="champion or challenger, chosen where routing is decided")
    version: str | None = Field(
        default=None,
        description="the registered version routing chose (and the cache keyed on); replicas "
        "serve exactly it and never re-read the routing. None: whatever the variant serves now",
    )
    series: list[SeriesInput]
    market: SeriesInput | None = Field(
        default=None,
        description=f"the market's ({MARKET_TICKER}) closes up to the newest as-of date, for "
        "models with market-context features",
    )


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
    """Which version serves each variant of a family now (as the serving replicas have vetted
    it). The challenger's traffic share is an API setting, read where the variant is chosen."""

    family: str
    champion: str | None
    challenger: str | None = None

    def version_of(self, variant: str) -> str | None:
        return self.challenger if variant == CHALLENGER else self.champion


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
