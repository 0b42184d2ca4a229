"""All SQL about idempotency keys. Each function is one statement (one round trip)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.models import IdempotencyKey


@dataclass(frozen=True, slots=True)
class StoredResponse:
    fingerprint: str
    status_code: int
    response_body: str


_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:lock_id)")


async def try_lock(session: AsyncSession, lock_id: int) -> bool:
    """Take the key's transaction-scoped advisory lock without waiting; False while another request holds it.

    The lock, not the row, marks a request in flight: PostgreSQL drops it when the transaction ends,
    whether by commit, rollback or a dead connection, so no crash can leave a key stuck "in flight".
    """
    return bool((await session.execute(_TRY_LOCK, {"lock_id": lock_id})).scalar_one())


async def find_live(
    session: AsyncSession, *, principal: str, method_path: str, key: str
) -> StoredResponse | None:
    """The unexpired stored response for the key. Must run after try_lock, in its own statement: under
    READ COMMITTED it then sees a response committed by the request that held the lock before us."""
    statement = select(
        IdempotencyKey.fingerprint, IdempotencyKey.status_code, IdempotencyKey.response_body
    ).where(
        IdempotencyKey.principal == principal,
        IdempotencyKey.method_path == method_path,
        IdempotencyKey.key == key,
        IdempotencyKey.expires_at > func.now(),
    )
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        return None
    return StoredResponse(row.fingerprint, row.status_code, row.response_body)


async def store(
    session: AsyncSession,
    *,
    principal: str,
    method_path: str,
    key: str,
    fingerprint: str,
    status_code: int,
    response_body: str,
    ttl: dt.timedelta,
) -> bool:
    """Record the response in the request's own transaction; False if a live row is (unexpectedly) there.

    An expired row not yet purged is overwritten: its key is free again.
    """
    values = {
        "principal": principal,
        "method_path": method_path,
        "key": key,
        "fingerprint": fingerprint,
        "status_code": status_code,
        "response_body": response_body,
        "created_at": func.now(),
        "expires_at": func.now() + ttl,
    }
    inserted = insert(IdempotencyKey).values(**values)
    statement = inserted.on_conflict_do_update(
        index_elements=[IdempotencyKey.principal, IdempotencyKey.method_path, IdempotencyKey.key],
        set_={
            name: inserted.excluded[name]
            for name in values
            if name not in ("principal", "method_path", "key")
        },
        where=IdempotencyKey.expires_at <= func.now(),
    ).returning(IdempotencyKey.key)
    return (await session.execute(statement)).first() is not None


async def purge_expired(connection: AsyncConnection) -> int:
    """Delete expired keys; the number deleted."""
    result = await connection.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= func.now()))
    return int(result.rowcount or 0)
