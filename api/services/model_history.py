"""The model alias audit trail as the API shows it: who moved which alias of a family, when."""

from __future__ import annotations

import asyncpg

from api.db.models import AliasEvent, AliasEventRepository
from contracts import model_name


async def alias_history(pool: asyncpg.Pool, family: str, limit: int) -> list[AliasEvent]:
    """The newest `limit` alias moves of the family's registered model, newest first."""
    return await AliasEventRepository(pool).history(model_name(family), limit=limit)
