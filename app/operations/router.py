"""Probes and metrics for the people and machines that run the service; outside /api and the docs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from arq.constants import health_check_key_suffix
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.db import ping
from app.errors import problem_response

router = APIRouter(tags=["operations"], include_in_schema=False)

# A probe must answer well within the orchestrator's own timeout (typically 1-5 s) even when a
# dependency hangs rather than refuses.
CHECK_TIMEOUT_S = 1.0


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers. Deliberately touches no dependency, so a database outage does not
    get every replica restarted."""
    return {"status": "ok"}


async def _timed(check: Awaitable[str | None]) -> dict[str, Any]:
    """Run one check under the timeout: {"status": "up"|"down", "duration_ms", and "error" when down}."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            error = await check
    except TimeoutError:
        error = f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # any failure means "down"; the type is enough to act on
        error = type(exc).__name__
    result: dict[str, Any] = {
        "status": "down" if error else "up",
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if error:
        result["error"] = error
    return result


async def _database(engine: AsyncEngine) -> None:
    await ping(engine)


async def _redis(redis: Redis) -> None:
    await redis.ping()


async def _worker(redis: Redis, queue_name: str) -> str | None:
    # An ARQ worker rewrites this key every health_check_interval with a TTL one second longer, and
    # deletes it on a clean shutdown: present means a worker polled the queue recently.
    if not await redis.exists(queue_name + health_check_key_suffix):
        return f"no ARQ worker health check on queue {queue_name!r}"
    return None


@router.get("/ready")
async def ready(request: Request) -> Response:
    """Readiness: the database answers SELECT 1, Redis answers PING, and an ARQ worker is alive."""
    state = request.app.state
    names = ("database", "redis", "worker")
    results = await asyncio.gather(
        _timed(_database(state.engine)),
        _timed(_redis(state.redis)),
        _timed(_worker(state.redis, state.settings.arq_queue_name)),
    )
    checks = dict(zip(names, results, strict=True))
    down = [name for name, result in checks.items() if result["status"] == "down"]
    if down:
        return problem_response(
            request,
            status=503,
            code="not-ready",
            title="Service not ready",
            detail="Not ready: " + ", ".join(down) + " down.",
            headers={"Retry-After": "5"},
            checks=checks,
            **({"replicas": state.replicas.report()} if state.replicas is not None else {}),
        )
    body: dict[str, Any] = {"status": "ready", "checks": checks}
    if state.replicas is not None:
        # Information, not a condition: with every replica out the primary answers the reads.
        body["replicas"] = state.replicas.report()
    return JSONResponse(body)


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
