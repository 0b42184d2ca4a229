"""All SQL about credit policies: each effective policy stored once, by version."""

from __future__ import annotations

import json

from asyncpg import Record
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.credit.policy import Policy
from app.db import ReadsWith, Statement, as_reader

# Also run as a CTE of every decision's INSERT (app/decisions/queries.py): the version a decision names
# exists even if the database was down when the app started.
REGISTER_SQL = """
    INSERT INTO credit_policies (version, policy_values)
    VALUES (:policy_version, CAST(:policy_values AS jsonb))
    ON CONFLICT (version) DO NOTHING
"""


def register_parameters(policy: Policy) -> dict[str, str]:
    return {"policy_version": policy.version, "policy_values": json.dumps(policy.values(), sort_keys=True)}


async def register(bind: AsyncEngine | AsyncSession, policy: Policy) -> None:
    if isinstance(bind, AsyncEngine):
        async with bind.begin() as connection:
            await connection.execute(text(REGISTER_SQL), register_parameters(policy))
    else:
        await bind.execute(text(REGISTER_SQL), register_parameters(policy))


_BY_VERSION = Statement.compile(
    text(
        "SELECT version, policy_values::text AS policy_values, first_used FROM credit_policies"
        " WHERE version = :v"
    )
)


async def by_version(db: ReadsWith, version: str) -> Record | None:
    return await as_reader(db).fetchrow(_BY_VERSION, v=version)
