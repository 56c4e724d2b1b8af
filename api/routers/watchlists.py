"""/api/v1/portfolio/watchlists: named lists of known tickers.

Listed under the `portfolio` tag with the same scopes as portfolios (`read:portfolio` to read,
`write:portfolio` to change). The app includes this router before the portfolio router, so
`/watchlists` is never taken for a portfolio id. A watchlist that is not the caller's answers
404, exactly like one that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from api.db.watchlists import WatchlistRow
from api.deps import PoolDep, PrincipalDep, require_scope
from api.errors import problems
from api.services.watchlists import WatchlistIn, WatchlistOut, WatchlistService

ACCESS = require_scope("read:portfolio", write="write:portfolio")
router = APIRouter(prefix="/api/v1/portfolio/watchlists", tags=["portfolio"], dependencies=[ACCESS])


async def get_service(pool: PoolDep) -> WatchlistService:
    return WatchlistService(pool)


ServiceDep = Annotated[WatchlistService, Depends(get_service)]


async def owned_watchlist(
    watchlist_id: uuid.UUID, principal: PrincipalDep, service: ServiceDep
) -> WatchlistRow:
    """The caller's watchlist, or 404 — whoever else it may belong to."""
    return await service.owned(watchlist_id, principal.user_id)


OwnedWatchlist = Annotated[WatchlistRow, Depends(owned_watchlist)]


@router.post("", response_model=WatchlistOut, status_code=201, responses=problems(409))
async def create_watchlist(
    body: WatchlistIn, principal: PrincipalDep, service: ServiceDep
) -> WatchlistOut:
    """A named list of known tickers."""
    return WatchlistOut.model_validate(await service.create(principal.user_id, body))


@router.get("", response_model=list[WatchlistOut])
async def list_watchlists(principal: PrincipalDep, service: ServiceDep) -> list[WatchlistOut]:
    """Your watchlists with their tickers."""
    return [WatchlistOut.model_validate(r) for r in await service.of_user(principal.user_id)]


@router.put("/{watchlist_id}", response_model=WatchlistOut, responses=problems(409))
async def replace_watchlist(
    body: WatchlistIn, watchlist: OwnedWatchlist, service: ServiceDep
) -> WatchlistOut:
    """Rename and set the tickers (the list replaces the old one)."""
    return WatchlistOut.model_validate(await service.replace(watchlist, body))


@router.delete("/{watchlist_id}", status_code=204)
async def delete_watchlist(watchlist: OwnedWatchlist, service: ServiceDep) -> None:
    """Delete a watchlist."""
    await service.delete(watchlist)
