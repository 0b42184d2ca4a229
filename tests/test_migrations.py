"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Base


async def test_the_migrated_schema_matches_the_models(engine: AsyncEngine) -> None:
    def diff(sync_connection: Any) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(sync_connection), Base.metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []
