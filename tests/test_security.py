"""Access control (API keys), the 64 KiB body limit, and what the logs may never contain."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.main import create_app
from tests.conftest import FIXED_NOW
from tests.live import register_body

pytestmark = pytest.mark.asyncio

KEYS = ("k-alpha-0123456789", "k-beta-9876543210")
LOAN = {"loan_amount": 10_000, "interest_rate": 14, "tenure": 12}
# Every /api/ operation, with a request that is valid apart from credentials.
API_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/register", None),  # body filled per call (phone numbers are unique)
    ("POST", "/api/check-eligibility", {"customer_id": 1, **LOAN}),
    ("POST", "/api/create-loan", {"customer_id": 1, **LOAN}),
    ("GET", "/api/view-loan/1", None),
    ("GET", "/api/view-loans/1", None),
    ("GET", "/api/does-not-exist", None),
]


@asynccontextmanager
async def make_client(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], **overrides: Any
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    app = create_app(settings.model_copy(update=overrides))
    async with app.router.lifespan_context(app):
        app.state.sessionmaker = sessionmaker
        app.state.clock = lambda: FIXED_NOW
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
            yield app, client


@pytest.fixture
async def secured(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[AsyncClient]:
    async with make_client(settings, sessionmaker, api_keys=" , ".join(KEYS)) as (_, client):
        yield client


async def _call(client: AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    if path == "/api/register":
        body = register_body()
    return await client.request(method, path, json=body, headers=headers)


# ------------------------------------------------------------------------------------------ the matrix

REFUSED = {
    "no credentials": {},
    "wrong bearer": {"Authorization": "Bearer not-a-key"},
    "wrong X-API-Key": {"X-API-Key": "not-a-key"},
    "key as Basic credentials": {"Authorization": f"Basic {KEYS[0]}"},
    "bare key in Authorization": {"Authorization": KEYS[0]},
    "empty bearer": {"Authorization": "Bearer "},
    "prefix of a key": {"X-API-Key": KEYS[0][:-1]},
    "key plus a suffix": {"X-API-Key": KEYS[0] + "x"},
    "the key list itself": {"X-API-Key": ",".join(KEYS)},
    "a valid X-API-Key with a wrong bearer": {"Authorization": "Bearer nope", "X-API-Key": KEYS[1]},
    "a valid bearer with a wrong X-API-Key": {"Authorization": f"Bearer {KEYS[0]}", "X-API-Key": "nope"},
    "two clients' keys at once": {"Authorization": f"Bearer {KEYS[0]}", "X-API-Key": KEYS[1]},
}
ACCEPTED = {
    "bearer, first key": {"Authorization": f"Bearer {KEYS[0]}"},
    "bearer, second key": {"Authorization": f"Bearer {KEYS[1]}"},
    "bearer, lower-case scheme": {"Authorization": f"bearer {KEYS[0]}"},
    "X-API-Key, first key": {"X-API-Key": KEYS[0]},
    "X-API-Key, second key": {"X-API-Key": KEYS[1]},
    "the same key in both headers": {"Authorization": f"Bearer {KEYS[1]}", "X-API-Key": KEYS[1]},
}


@pytest.mark.parametrize(("method", "path", "body"), API_CALLS)
@pytest.mark.parametrize("credentials", list(REFUSED), ids=list(REFUSED))
async def test_api_routes_refuse_requests_without_a_valid_key(
    secured: AsyncClient, method: str, path: str, body: Any, credentials: str
) -> None:
    response = await _call(secured, method, path, body, REFUSED[credentials])

    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    problem = response.json()
    assert problem["status"] == 401 and problem["type"].endswith("/unauthorized")
    assert KEYS[0] not in response.text


@pytest.mark.parametrize(("method", "path", "body"), API_CALLS)
@pytest.mark.parametrize("credentials", list(ACCEPTED), ids=list(ACCEPTED))
async def test_api_routes_accept_either_header_with_any_configured_key(
    secured: AsyncClient, method: str, path: str, body: Any, credentials: str
) -> None:
    response = await _call(secured, method, path, body, ACCEPTED[credentials])

    assert response.status_code != 401, response.text
    assert response.status_code < 500, response.text


async def test_an_invalid_key_is_told_apart_from_a_missing_one(secured: AsyncClient) -> None:
    missing = await secured.get("/api/view-loan/1")
    invalid = await secured.get("/api/view-loan/1", headers={"X-API-Key": "nope"})
    assert "error=" not in missing.headers["www-authenticate"]
    assert 'error="invalid_token"' in invalid.headers["www-authenticate"]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/health", "/ready", "/metrics"])
async def test_docs_probes_and_metrics_stay_open(secured: AsyncClient, path: str) -> None:
    response = await secured.get(path)
    assert response.status_code != 401
    # /ready may honestly answer 503 here (no ARQ worker runs in the tests), but never for want of a key.
    assert response.status_code in (200, 503), response.text


async def _run_lifespan(app: FastAPI) -> list[str]:
    """Start and stop the app through the ASGI lifespan protocol, as uvicorn does (middlewares included)."""
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


@pytest.mark.parametrize(("api_keys", "warns"), [("", True), (" , ", True), (KEYS[0], False)])
async def test_startup_warns_when_the_api_is_open(
    settings: Settings, caplog: pytest.LogCaptureFixture, api_keys: str, warns: bool
) -> None:
    app = create_app(settings.model_copy(update={"api_keys": api_keys}))
    with caplog.at_level(logging.WARNING, logger="app.security"):
        sent = await _run_lifespan(app)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    warned = any("API_KEYS is not set" in record.getMessage() for record in caplog.records)
    assert warned is warns


async def test_without_keys_the_api_is_open(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with make_client(settings, sessionmaker, api_keys="") as (_, client):
        response = await client.get("/api/view-loan/1")
    assert response.status_code == 404


# --------------------------------------------------------------------------------------- the document


async def test_the_document_declares_both_schemes_and_401_when_keys_are_set(secured: AsyncClient) -> None:
    document = (await secured.get("/openapi.json")).json()

    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http" and schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["apiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    operations = [(path, op) for path, item in document["paths"].items() for op in item.values()]
    assert operations
    for path, operation in operations:
        assert path.startswith("/api/")
        assert operation["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}], path
        assert "401" in operation["responses"], path


async def test_the_document_declares_no_scheme_when_open(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()

    assert "securitySchemes" not in document.get("components", {})
    for item in document["paths"].values():
        for operation in item.values():
            assert "security" not in operation
            assert "401" not in operation["responses"]


async def test_the_document_declares_413_on_every_operation_with_a_body(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    with_body = [op for item in document["paths"].values() for op in item.values() if "requestBody" in op]
    assert len(with_body) >= 3
    assert all("413" in op["responses"] for op in with_body)


# ------------------------------------------------------------------------------------------------ 413


def _oversized_register_body(size: int) -> bytes:
    body = register_body()
    body["first_name"] = "A" * size  # valid JSON, only too big
    return json.dumps(body).encode()


async def _count_customers(connection: AsyncConnection) -> int:
    return int(await connection.scalar(text("SELECT count(*) FROM customers")))


async def test_a_body_over_64_kib_with_content_length_is_a_413(
    client: AsyncClient, connection: AsyncConnection
) -> None:
    before = await _count_customers(connection)
    content = _oversized_register_body(64 * 1024)

    response = await client.post(
        "/api/register", content=content, headers={"Content-Type": "application/json"}
    )

    assert int(response.request.headers["content-length"]) > 64 * 1024
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/payload-too-large")
    assert await _count_customers(connection) == before


async def test_a_declared_length_over_the_limit_is_refused_before_any_read(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    received: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = {"type": "http.request", "body": b"{}", "more_body": False}
        received.append(message)
        return message

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/register",
        "raw_path": b"/api/register",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(10**9).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
    }
    async with make_client(settings, sessionmaker) as (app, _):
        await app(scope, receive, send)

    assert sent[0]["status"] == 413
    assert received == []  # refused on the header alone: not one chunk of the gigabyte was read


async def test_a_chunked_body_over_64_kib_is_a_413(client: AsyncClient, connection: AsyncConnection) -> None:
    before = await _count_customers(connection)
    content = _oversized_register_body(64 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 4096):
            yield content[start : start + 4096]

    response = await client.post(
        "/api/register", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert "content-length" not in response.request.headers  # really chunked: no header announced the size
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/payload-too-large")
    assert await _count_customers(connection) == before


async def test_a_chunked_body_under_the_limit_goes_through(client: AsyncClient) -> None:
    content = json.dumps(register_body()).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 7):
            yield content[start : start + 7]

    response = await client.post(
        "/api/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text


async def test_a_body_of_exactly_64_kib_is_not_refused_for_its_size(client: AsyncClient) -> None:
    content = b'{"first_name": "' + b"A" * (64 * 1024 - 18) + b'"}'
    assert len(content) == 64 * 1024
    response = await client.post(
        "/api/register", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422  # validated (names are at most 100 characters), not refused


async def test_the_limit_follows_the_setting(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with make_client(settings, sessionmaker, max_body_bytes=100) as (_, client):
        response = await client.post("/api/register", json=register_body(first_name="A" * 60))
    assert response.status_code == 413


# ------------------------------------------------------------------------------------------------ logs


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        """Everything any handler could print: message, arguments, extras and any traceback."""
        formatter = logging.Formatter()
        parts = []
        for record in self.records:
            parts.append(record.getMessage())
            parts.extend(repr(value) for value in vars(record).values())
            if record.exc_info:
                parts.append(formatter.formatException(record.exc_info))
        return "\n".join(parts)


@contextmanager
def all_log_records() -> Iterator[_Records]:
    root = logging.getLogger()
    handler = _Records()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_logs_never_contain_phone_numbers_or_request_bodies(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    body = register_body(first_name="Zyxwvutsrq")
    phone = str(body["phone_number"])
    async with make_client(settings, sessionmaker) as (_, client):
        with all_log_records() as logs:
            created = await client.post("/api/register", json=body)
            duplicate = await client.post("/api/register", json=body)
            invalid = await client.post("/api/register", json={**body, "age": "not a number"})
            customer_id = created.json()["customer_id"]
            loan = await client.post("/api/create-loan", json={"customer_id": customer_id, **LOAN})
            view = await client.get(f"/api/view-loan/{loan.json()['loan_id']}")
            keyed = await client.post("/api/register", json=body, headers={"Idempotency-Key": "k-1"})
            too_big = await client.post("/api/register", json={**body, "last_name": "B" * 70_000})

    assert [created.status_code, duplicate.status_code, invalid.status_code] == [201, 409, 422]
    assert [loan.status_code, view.status_code, keyed.status_code] == [201, 200, 409]
    assert too_big.status_code == 413
    assert phone in view.text  # the API does answer the phone number; the logs must not repeat it
    assert logs.records, "nothing was logged: this test would pass vacuously"
    logged = logs.text()
    for secret in (phone, "Zyxwvutsrq", "BBBBBBBBBB"):
        assert secret not in logged


async def test_database_errors_do_not_carry_statement_parameters(engine: AsyncEngine) -> None:
    """An unexpected database error is logged with its message: the engine must leave the statement's
    parameters (a phone number, a name) out of it."""
    with pytest.raises(DBAPIError) as failure:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT CAST(:phone AS text), 1 / 0"), {"phone": "9876543210"})
    assert "division by zero" in str(failure.value)
    assert "9876543210" not in str(failure.value)
