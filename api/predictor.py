"""The seam between the API and model serving.

`api` never imports Ray: the serving layer passes a Ray-handle implementation, tests and
`stockcopilot up --no-ray` pass an in-process one built from the same registered models.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

from pydantic import BaseModel


class QuantileForecast(BaseModel):
    """Quantiles of the log return over `horizon` trading days after `as_of`."""

    ticker: str
    as_of: date
    horizon: int
    quantiles: dict[str, float]
    model_family: str
    model_version: str
    variant: str


class Predictor(Protocol):
    async def forecast(
        self, ticker: str, horizon: int, family: str, user_key: str
    ) -> QuantileForecast: ...

    async def ready(self) -> bool: ...
