"""/api/v1/admin: operator-only data management."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, UploadFile

from api.deps import MarketDataDep, require
from api.errors import ProblemError, problems
from api.schemas import ImportResult
from api.security.access import ADMIN

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[require(ADMIN)])
MAX_UPLOAD_BYTES = 10 * 1024 * 1024


@router.post("/bars/import", response_model=ImportResult, status_code=201, responses=problems(413))
async def import_bars(
    market: MarketDataDep,
    file: UploadFile,
    ticker: Annotated[str, Query(min_length=1, max_length=15)],
    name: Annotated[str | None, Query(max_length=120)] = None,
    sector: Annotated[str | None, Query(max_length=64)] = None,
) -> ImportResult:
    """Import a user's OHLCV CSV; every row is validated and a file with errors commits nothing."""
    content = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(content) > MAX_UPLOAD_BYTES:
        raise ProblemError(413, "file_too_large", f"CSV larger than {MAX_UPLOAD_BYTES} bytes")
    rows, counts = await market.import_csv(
        ticker, content, file.filename or "upload.csv", name, sector
    )
    return ImportResult(
        ticker=ticker.upper(), rows=rows, inserted=counts.inserted, updated=counts.updated
    )
