"""Domain errors and the one place that renders every error as RFC 9457 problem+json.

Services raise these; they never know about HTTP. Routers never catch them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://credit-approval.dev/problems/"

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """Base of every error a service may raise; `status` and `code` decide the problem document."""

    status: int = 400
    code: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class NotFound(DomainError):
    status, code, title = 404, "not-found", "Resource not found"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class InvalidRequest(DomainError):
    status, code, title = 422, "invalid-request", "Invalid request"


class Unauthorized(DomainError):
    status, code, title = 401, "unauthorized", "Missing or invalid API key"


class PayloadTooLarge(DomainError):
    status, code, title = 413, "payload-too-large", "Request body too large"


class ServiceUnavailable(DomainError):
    status, code, title = 503, "service-unavailable", "Service unavailable"
    retry_after_s: int = 1  # sent as Retry-After


class LoanPaidOff(Conflict):
    """A payment towards a loan that owes nothing."""

    code, title = "loan-paid-off", "Loan already paid off"


class PaymentNotAccepted(InvalidRequest):
    """A payment amount the next installment cannot take; the problem carries the amount it can."""

    code, title = "payment-not-accepted", "Payment amount not accepted"


class InstallmentTooSmall(InvalidRequest):
    """Terms whose installment rounds to 0.00: a loan nobody could repay in cents."""

    code, title = "installment-too-small", "Installment rounds to zero"


class ImportInProgress(ServiceUnavailable):
    """A decision that an import still running could make stale: refused until the import commits."""

    code, title = "import-in-progress", "Import in progress"
    retry_after_s = 5


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. `body.loan_amount`.")
    message: str = Field(description="What is wrong with the value, for people.")
    type: str = Field(description="Machine-readable error type.")


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(
        description="URI identifying the kind of problem; stable, for programs to branch on.",
        examples=[PROBLEM_BASE + "not-found"],
    )
    title: str = Field(description="Short summary of the kind of problem.", examples=["Resource not found"])
    status: int = Field(description="The HTTP status code.", examples=[404])
    detail: str = Field(
        description="What went wrong in this occurrence, for people.",
        examples=["Customer 42 does not exist."],
    )
    instance: str | None = Field(
        default=None, description="Path of the request that failed.", examples=["/api/view-loans/42"]
    )
    request_id: str | None = Field(
        default=None,
        description="The request id (the client's X-Request-ID, or the generated one): quote it when "
        "reporting a problem.",
        examples=["5f0c6d3e9b1a4e0f8a7d2c4b6e8f0a1c"],
    )
    field: str | None = Field(
        default=None,
        description="The request field the problem is about, when there is one.",
        examples=["customer_id"],
    )
    errors: list[FieldError] | None = Field(default=None, description="Per-field errors of a 422.")
    minimum_amount: float | None = Field(
        default=None,
        description="make-payment `payment-not-accepted`: the least the next installment takes "
        "(its interest), a currency amount.",
        examples=[2000.0],
    )
    payoff_amount: float | None = Field(
        default=None,
        description="make-payment `payment-not-accepted`: the most the next installment takes, and the only "
        "amount the last one takes (outstanding principal plus the installment's interest), a currency "
        "amount.",
        examples=[202000.0],
    )


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
        # Also the header: a 500 is rendered outside the request-id middleware, which cannot add it there.
        headers = {**(headers or {}), "X-Request-ID": request_id}
    body.update({key: value for key, value in extensions.items() if value is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers: dict[str, str] | None = None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, ServiceUnavailable):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return problem_response(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers=headers,
        **exc.extensions,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field_path(error["loc"]), "message": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    fields = ", ".join(sorted({error["field"] for error in errors}))
    return problem_response(
        request,
        status=422,
        code="validation-error",
        title="Request validation failed",
        detail=f"Invalid value for: {fields}" if fields else "The request is invalid.",
        errors=errors,
    )


def _allowed_methods(request: Request) -> str | None:
    """Every method the API documents at this path. Starlette's 405 names only the first route that
    matched the path, and GET and PATCH /api/customers/{id} are two routes. Read from the OpenAPI
    document (built once), which is what clients and the fuzzing hold the API to."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = []
        for template, operations in request.app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            methods = {method.upper() for method in operations}
            if "GET" in methods:
                methods.add("HEAD")
            table.append((re.compile(f"^{pattern}/?$"), methods))
        request.app.state.allowed_methods = table
    path = request.url.path
    allowed = set().union(*(methods for pattern, methods in table if pattern.match(path)))
    return ", ".join(sorted(allowed)) if allowed else None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        exc.headers = {**(exc.headers or {}), "Allow": allowed}
    code = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
        exc.status_code, "http-error"
    )
    return problem_response(
        request,
        status=exc.status_code,
        code=code,
        title=str(exc.detail) if exc.status_code != 404 else "Not found",
        detail=str(exc.detail),
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.error("database unavailable: %s", type(exc).__name__)
    return problem_response(
        request,
        status=503,
        code="service-unavailable",
        title="Service unavailable",
        detail="The database is unavailable; retry later.",
        headers={"Retry-After": "1"},
    )


async def _redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.error("redis unavailable: %s", type(exc).__name__)
    return problem_response(
        request,
        status=503,
        code="service-unavailable",
        title="Service unavailable",
        detail="The job store (Redis) is unavailable; retry later.",
        headers={"Retry-After": "1"},
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return problem_response(
        request,
        status=500,
        code="internal-error",
        title="Internal server error",
        detail="An unexpected error occurred.",
    )


def is_connection_error(exc: BaseException) -> bool:
    """True for failures to reach the database (as opposed to errors in a statement)."""
    if isinstance(exc, (OSError, PoolTimeoutError, InterfaceError)):
        return True
    if isinstance(exc, (OperationalError, DBAPIError)):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, OSError | InterfaceError)
    return False


# Transient conditions of a healthy request: it may well succeed if sent again a little later (503).
# 40001/40P01 reach the handler only once app.retry's bounded retries are spent.
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout)
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up)
    }
)


def sqlstate_of(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind a (SQLAlchemy-wrapped) driver error, if there is one."""
    orig = getattr(exc, "orig", None) or exc
    for candidate in (orig, orig.__cause__):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return None


async def _dbapi_error(request: Request, exc: Exception) -> JSONResponse:
    if is_connection_error(exc) or sqlstate_of(exc) in TRANSIENT_SQLSTATES:
        return await _database_unavailable(request, exc)
    return await _unexpected_error(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _dbapi_error)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(OSError, _database_unavailable)
    # Job state lives in Redis (GET /api/ingestions/{id}): an outage there is a 503 too, not a 500.
    app.add_exception_handler(RedisConnectionError, _redis_unavailable)
    app.add_exception_handler(RedisTimeoutError, _redis_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
