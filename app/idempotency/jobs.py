"""The ARQ cron job that deletes expired idempotency keys (worker.py lists it in ``cron_jobs``).

Expired keys are already ignored by requests; deleting them only keeps the table (and its index) small.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings, get_settings
from app.db import create_engine
from app.idempotency import queries

logger = logging.getLogger(__name__)


async def purge_expired_idempotency_keys(ctx: dict[str, Any]) -> int:
    """Delete every expired key; returns how many were deleted."""
    engine: AsyncEngine | None = ctx.get("engine")
    if engine is not None:
        return await _purge(engine)
    # A worker that keeps no engine in its context: use a small one for this run only.
    settings: Settings = ctx.get("settings") or get_settings()
    engine = create_engine(settings, pool_size=1)
    try:
        return await _purge(engine)
    finally:
        await engine.dispose()


async def _purge(engine: AsyncEngine) -> int:
    async with engine.begin() as connection:
        deleted = await queries.purge_expired(connection)
    logger.info("purged expired idempotency keys", extra={"deleted": deleted})
    return deleted
