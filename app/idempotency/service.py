"""Idempotency-Key handling for POST /api/register and POST /api/create-loan.

Semantics (draft-ietf-httpapi-idempotency-key-header):
- the first request with a key runs; its status and body are stored in the same transaction as its
  effect, so either both commit or neither does;
- a retry with the same key and the same body gets the stored response again, with
  ``Idempotent-Replayed: true``, and changes nothing;
- the same key with a different body is a client error (422);
- the same key while the first request is still running answers 409 at once (no waiting).

A request that fails (an error response, a rollback, a crash) stores nothing: the key stays usable.
Requests without the header take none of these paths and send no extra statement.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import SessionDep
from app.errors import Conflict, InvalidRequest
from app.idempotency import queries

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Visible ASCII: a UUID, a ULID or any opaque token fits; a structured-field string ("...") too, and its
# quotes are dropped so `"abc"` and `abc` are the same key.
KEY_PATTERN = r"^[!-~]{1,255}$"
JSON = "application/json"

ModelT = TypeVar("ModelT", bound=BaseModel)

# OpenAPI: the header a replayed answer carries, for the responses of the routes that take a key.
REPLAYED_HEADER_DOC: dict[str, Any] = {
    REPLAYED_HEADER: {
        "description": "`true` when this is the stored answer to an earlier request with the same "
        "Idempotency-Key (nothing was done again); absent otherwise.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


class KeyReused(InvalidRequest):
    code, title = "idempotency-key-reused", "Idempotency-Key reused with another request"


class KeyInFlight(Conflict):
    code, title = "idempotency-key-in-flight", "A request with this Idempotency-Key is in progress"


def fingerprint(body: bytes) -> str:
    """sha256 of the body as canonical JSON: key order and whitespace do not make two bodies different."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except ValueError:  # not JSON (validation rejects it anyway): compare the bytes themselves
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def _lock_id(*parts: str) -> int:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)  # pg advisory locks take a signed bigint


def _normalise_key(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1]
    return raw


@dataclass(frozen=True, slots=True)
class _Claim:
    principal: str
    method_path: str
    key: str
    fingerprint: str


class Idempotency:
    """The request's idempotency context; ``run`` wraps the service call of a creating route."""

    def __init__(self, session: AsyncSession, request: Request, key: str | None) -> None:
        self._session = session
        self._request = request
        self._key = _normalise_key(key) if key is not None else None

    async def run(self, response: Response, produce: Callable[[], Awaitable[ModelT]]) -> ModelT | Response:
        if not self._key:
            return await produce()  # no header: exactly the route's normal path
        claim = await self._claim(self._key)
        stored = await queries.find_live(
            self._session, principal=claim.principal, method_path=claim.method_path, key=claim.key
        )
        if stored is not None:
            if stored.fingerprint != claim.fingerprint:
                raise KeyReused(
                    "This Idempotency-Key was already used with a different request body.",
                    field="Idempotency-Key",
                )
            return Response(
                stored.response_body,
                status_code=stored.status_code,
                media_type=JSON,
                headers={REPLAYED_HEADER: "true"},
            )
        result = await produce()
        return await self._store(claim, result, response)

    async def _claim(self, key: str) -> _Claim:
        request = self._request
        principal: str = getattr(request.state, "principal", "") or ""
        method_path = f"{request.method} {request.url.path.rstrip('/')}"
        if not await queries.try_lock(self._session, _lock_id(principal, method_path, key)):
            raise KeyInFlight(
                "A request with this Idempotency-Key is still being processed; retry later.",
                field="Idempotency-Key",
            )
        return _Claim(principal, method_path, key, fingerprint(await request.body()))

    async def _store(self, claim: _Claim, result: BaseModel, response: Response) -> Response:
        # The route's status (201) unless the endpoint chose another one (create-loan's 200 rejection).
        status_code = response.status_code or self._request.scope["route"].status_code or 200
        body = result.model_dump_json(by_alias=True)
        stored = await queries.store(
            self._session,
            principal=claim.principal,
            method_path=claim.method_path,
            key=claim.key,
            fingerprint=claim.fingerprint,
            status_code=status_code,
            response_body=body,
            ttl=dt.timedelta(seconds=self._request.app.state.settings.idempotency_ttl_s),
        )
        if not stored:  # cannot happen while we hold the key's lock; never overwrite a live response
            raise KeyInFlight("This Idempotency-Key is in use; retry later.", field="Idempotency-Key")
        # The first answer carries the same bytes a replay will, so clients see one response, twice.
        return Response(body, status_code=status_code, media_type=JSON)


async def _idempotency(
    request: Request,
    session: SessionDep,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            pattern=KEY_PATTERN,
            description="Makes the request safe to retry: a repeat with the same key and body within 24 h "
            "replays the first response (header `Idempotent-Replayed: true`) and creates nothing.",
            examples=["8e03978e-40d5-43e8-bc93-6894a57f9324"],
        ),
    ] = None,
) -> Idempotency:
    if key is not None and not _normalise_key(key):
        raise InvalidRequest("Idempotency-Key must not be empty.", field="Idempotency-Key")
    return Idempotency(session, request, key)


IdempotencyDep = Annotated[Idempotency, Depends(_idempotency)]
