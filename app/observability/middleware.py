"""One pure ASGI middleware for request ids, the access log and the HTTP metrics.

Pure ASGI (not BaseHTTPMiddleware, which adds a task and stream copies per request) and one middleware
rather than three: the per-request cost is a header scan, a contextvar, two clock reads, two cached metric
children and, when INFO is enabled, one access line (one string, app.observability.logging.access_line).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.observability.context import LogContext, accept_request_id, bind, unbind
from app.observability.logging import ACCESS_LOGGER, access_line

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_KEY = b"x-request-id"
# Any other method is counted as OTHER, so clients cannot mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

access_log = logging.getLogger(ACCESS_LOGGER)


def _header(scope: Scope, key: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == key:
            return value
    return None


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Routes that do not put themselves in scope["route"] (FastAPI's /docs, /redoc, /openapi.json)
        # are found by endpoint; filled on first use.
        self._templates_by_endpoint: dict[Any, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = accept_request_id(_header(scope, _HEADER_KEY))
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        state["request_id"] = request_id
        token = bind(LogContext(request_id, scope))
        header = (_HEADER_KEY, request_id.encode("ascii"))
        status: int | None = None

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                # problem+json responses may already carry it (errors.problem_response sets it too).
                if not any(name == _HEADER_KEY for name, _ in headers):
                    headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        metrics.HTTP_IN_FLIGHT.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_request_id)
        except BaseException as exc:
            # Raised before a response started: the error handler outside us (Starlette's
            # ServerErrorMiddleware) answers 500, or the client went away (499, as nginx counts it).
            # It still has to log and render the 500 with this request id: leave the context bound;
            # the task ends with the request.
            if status is None:
                status = 499 if isinstance(exc, asyncio.CancelledError) else 500
            self._finish(scope, status, started, request_id)
            raise
        self._finish(scope, status or 500, started, request_id)
        unbind(token)

    def _finish(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        duration = time.perf_counter() - started
        metrics.HTTP_IN_FLIGHT.dec()
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = self._route_template(scope)
        metrics.observe_request(method, route, status, duration)
        if metrics.MULTIPROCESS:
            metrics.refresh_pool_gauge()
        duration_ms = round(duration * 1000, 3)
        if access_line(method, route, status, duration_ms, request_id):
            return  # the JSON line, built as one string and handed to the writer thread
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %s",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )

    def _route_template(self, scope: Scope) -> str:
        route = scope.get("route")
        template = getattr(route, "path_format", None)
        if template is not None:
            return template
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return metrics.UNMATCHED_ROUTE
        if self._templates_by_endpoint is None:
            routes = getattr(scope.get("app"), "routes", ())
            self._templates_by_endpoint = {
                getattr(r, "endpoint", None): r.path_format for r in routes if hasattr(r, "path_format")
            }
        return self._templates_by_endpoint.get(endpoint, metrics.UNMATCHED_ROUTE)
