"""Carry a request's id into the ARQ jobs it enqueues, and give every job a log context and a duration.

Web side:    await enqueue_with_request_id(request.app.state.redis, "ingest_workbook", path, _job_id=...)
Worker side: functions = [observed_job(ingest_workbook)]   (or decorate the job with @observed_job)
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from arq.connections import ArqRedis
from arq.jobs import Job

from app.metrics import time_job
from app.observability.context import LogContext, bind, current_request_id, new_request_id, unbind

REQUEST_ID_KWARG = "request_id"

R = TypeVar("R")


async def enqueue_with_request_id(redis: ArqRedis, function: str, *args: Any, **kwargs: Any) -> Job | None:
    """`redis.enqueue_job`, adding the current request id as the job's `request_id` keyword argument.

    ARQ options (`_job_id`, `_defer_by`...) pass through unchanged; the job id stays independent of the
    request id, so content-hash job ids still deduplicate."""
    request_id = current_request_id()
    if request_id is not None:
        kwargs.setdefault(REQUEST_ID_KWARG, request_id)
    return await redis.enqueue_job(function, *args, **kwargs)


def observed_job(job: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Wrap an ARQ job: bind the enqueuing request's id (or a new one) and the job name to every log line
    the job emits, and observe its wall time in job_duration_seconds. The job itself does not receive
    `request_id`; it can read it with `app.observability.context.current_request_id()`."""
    name = job.__name__

    @functools.wraps(job)
    async def wrapper(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> R:
        request_id = kwargs.pop(REQUEST_ID_KWARG, None) or new_request_id()
        token = bind(LogContext(request_id, job=name))
        try:
            with time_job(name):
                return await job(ctx, *args, **kwargs)
        finally:
            unbind(token)

    return wrapper
