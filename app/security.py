"""Access control (API keys) and the request-body size limit, as pure ASGI middlewares.

Pure ASGI, not BaseHTTPMiddleware: the body limit must see every chunk the server hands the app (a
chunked upload has no Content-Length to trust), and neither may cost a task or a stream copy per request.

- API keys: when ``settings.api_keys`` is set, every ``/api/`` route needs ``Authorization: Bearer <key>``
  or ``X-API-Key: <key>``; anything else gets 401 problem+json with ``WWW-Authenticate``. The docs, the
  OpenAPI document, /health, /ready and /metrics stay open. Without keys the service is open and says so
  in a warning at startup.
- Body limit: a body larger than ``settings.max_body_bytes`` gets 413 problem+json, whether its
  Content-Length says so up front or its chunks add up to it on the way in.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.errors import PayloadTooLarge, Unauthorized, problem_response
from app.responses import problem_responses

logger = logging.getLogger(__name__)

PROTECTED_PREFIX = "/api/"
BEARER_SCHEME = "bearerAuth"
API_KEY_SCHEME = "apiKeyAuth"
API_KEY_HEADER = "X-API-Key"
_AUTHORIZATION = b"authorization"
_X_API_KEY = API_KEY_HEADER.lower().encode()
_CONTENT_LENGTH = b"content-length"
_REALM = 'Bearer realm="credit-approval"'


def _digest(secret: bytes) -> bytes:
    # Compare fixed-length digests: hmac.compare_digest is constant-time only for equal lengths.
    return hashlib.sha256(secret).digest()


def principal_of(key: str) -> str:
    """A stable, non-secret name for an API key (scopes idempotency keys per client)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _is_protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIX) or path == PROTECTED_PREFIX.rstrip("/")


def _presented_keys(scope: Scope) -> list[bytes]:
    presented: list[bytes] = []
    for name, value in scope["headers"]:
        if name == _AUTHORIZATION:
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                presented.append(token.strip())
        elif name == _X_API_KEY and value.strip():
            presented.append(value.strip())
    return presented


def _warn_open_at_startup(send: Send) -> Send:
    # Once startup has completed, so the warning goes through the logging the app's lifespan configured.
    async def send_then_warn(message: Message) -> None:
        await send(message)
        if message["type"] == "lifespan.startup.complete":
            logger.warning("API_KEYS is not set: the /api/ routes are open to anyone who can reach them")

    return send_then_warn


class ApiKeyMiddleware:
    """401 for /api/ requests without a valid key; sets ``request.state.principal`` for the others."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self._keys = [(_digest(key.encode()), principal_of(key)) for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and not self._keys:
            await self.app(scope, receive, _warn_open_at_startup(send))
            return
        if scope["type"] != "http" or not self._keys or not _is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = _presented_keys(scope)
        principal = self._match(presented)
        if principal is None:
            await self._refuse(scope, receive, send, invalid=bool(presented))
            return
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        state["principal"] = principal
        await self.app(scope, receive, send)

    def _match(self, presented: list[bytes]) -> str | None:
        """The principal of the presented key; None when none is presented or any presented one is wrong
        (a request carrying a valid and an invalid credential is ambiguous, and refused)."""
        principals = []
        for candidate in presented:
            candidate_digest = _digest(candidate)
            matched: str | None = None
            # Every configured key is compared, so timing does not tell which one (or whether any) matched.
            for key_digest, principal in self._keys:
                if hmac.compare_digest(candidate_digest, key_digest):
                    matched = principal
            if matched is None:
                return None
            principals.append(matched)
        # Two valid keys of two clients in one request: refuse rather than pick one.
        return principals[0] if principals and len(set(principals)) == 1 else None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, *, invalid: bool) -> None:
        challenge = f'{_REALM}, error="invalid_token"' if invalid else _REALM
        detail = (
            "The API key is not valid."
            if invalid
            else f"Send an API key as `Authorization: Bearer <key>` or `{API_KEY_HEADER}: <key>`."
        )
        response = problem_response(
            Request(scope),
            status=Unauthorized.status,
            code=Unauthorized.code,
            title=Unauthorized.title,
            detail=detail,
            headers={"WWW-Authenticate": challenge},
        )
        await response(scope, receive, send)


class BodyTooLarge(PayloadTooLarge, StarletteHTTPException):
    """Raised from ``receive`` once the body grows past the limit.

    An HTTPException so FastAPI's body reader lets it through (it turns any other error into a 400); a
    PayloadTooLarge so the one problem+json handler renders it (the MRO finds DomainError first).
    """

    def __init__(self, limit: int) -> None:
        PayloadTooLarge.__init__(self, _too_large_detail(limit))
        StarletteHTTPException.__init__(self, status_code=413, detail=self.detail)


def _too_large_detail(limit: int) -> str:
    return f"The request body is larger than the limit of {limit} bytes."


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == _CONTENT_LENGTH:
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes``: by Content-Length up front, else by counting chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)  # without reading a byte of it
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Normally the app's exception handler has answered already; this covers a reader outside it.
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            Request(scope),
            status=PayloadTooLarge.status,
            code=PayloadTooLarge.code,
            title=PayloadTooLarge.title,
            detail=_too_large_detail(self.max_bytes),
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    return [
        (path, operation)
        for path, item in document.get("paths", {}).items()
        for method, operation in item.items()
        if method in methods
    ]


def document_guards(document: dict[str, Any], settings: Settings) -> None:
    """Make the OpenAPI document tell the truth about what answers before an endpoint runs: on every
    operation that takes a body, 413 (this module's limit) and 400 (a body that is not JSON text at all);
    with keys configured, the two security schemes and a 401 on every /api/ operation."""
    body_errors = problem_responses(400, 413)
    unauthorized = problem_responses(401)[401]
    for path, operation in _operations(document):
        responses = operation.setdefault("responses", {})
        if "requestBody" in operation:
            for status, response in body_errors.items():
                responses.setdefault(str(status), response)
        if settings.api_key_list and _is_protected(path):
            operation["security"] = [{BEARER_SCHEME: []}, {API_KEY_SCHEME: []}]
            responses.setdefault("401", unauthorized)
    if settings.api_key_list:
        document.setdefault("components", {})["securitySchemes"] = {
            BEARER_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key as a bearer token.",
            },
            API_KEY_SCHEME: {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
        }


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the middlewares (the key check outermost: an unauthenticated client is refused before its body
    is looked at) and document them in the OpenAPI document."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_key_list)
    build_openapi: Callable[[], dict[str, Any]] = app.openapi
    documented: set[int] = set()

    def openapi() -> dict[str, Any]:
        document = build_openapi()  # cached by FastAPI: the same dict on every call
        if id(document) not in documented:
            document_guards(document, settings)
            documented.add(id(document))
        return document

    app.openapi = openapi  # type: ignore[method-assign]
