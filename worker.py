"""The ARQ worker: `arq worker.WorkerSettings` (or `credit-approval worker`).

Settings are read once at import: ARQ wants them as class attributes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq.connections import RedisSettings
from arq.cron import CronJob, cron

from app import metrics
from app.config import Settings, get_settings
from app.db import create_sessionmaker
from app.idempotency.jobs import purge_expired_idempotency_keys
from app.ingestion.job_state import RESULT_TTL_S
from app.ingestion.jobs import ingest_workbooks, worker_engine
from app.observability.jobs import observed_job
from app.observability.logging import arq_log_config, configure_logging
from app.policy_file import load_policy

settings = get_settings()
# `arq worker.WorkerSettings --custom-log-dict worker.LOG_CONFIG`: ARQ's own start lines in LOG_FORMAT.
LOG_CONFIG = arq_log_config(settings.log_level, settings.log_format)
_metrics_served: list[int] = []  # started once per process, whatever restarts ARQ does


async def startup(ctx: dict[str, Any]) -> None:
    """Build the engine and sessionmaker jobs use. A caller may put its own `settings` in ctx (tests)."""
    job_settings: Settings = ctx.setdefault("settings", settings)
    # After ARQ's own logging set-up: every line, ARQ's included, as JSON with the job's request id.
    configure_logging(job_settings.log_level, job_settings.log_format)
    # The same policy file as the API's; an invalid one stops the worker here, naming the field.
    ctx["policy"] = load_policy(job_settings.credit_policy_file)
    ctx["engine"] = worker_engine(job_settings)
    if job_settings.worker_metrics_port and not _metrics_served:
        # The worker's metrics (ingestion rows, job durations) live in its own process or container.
        metrics.start_metrics_server(job_settings.worker_metrics_port)
        _metrics_served.append(job_settings.worker_metrics_port)
    ctx["sessionmaker"] = create_sessionmaker(ctx["engine"])


async def shutdown(ctx: dict[str, Any]) -> None:
    engine = ctx.get("engine")
    if engine is not None:
        await engine.dispose()


class WorkerSettings:
    # observed_job: the enqueuing request's id on the job's log lines, and job_duration_seconds.
    functions: ClassVar[list[Any]] = [observed_job(ingest_workbooks)]
    # Periodic jobs go here (arq.cron.cron(...)).
    cron_jobs: ClassVar[list[CronJob]] = [
        # Hourly: an Idempotency-Key lives 24 h; expired ones are already ignored, this keeps the table small.
        cron(purge_expired_idempotency_keys, minute={17}, run_at_startup=True),
    ]
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    queue_name = settings.arq_queue_name
    on_startup = startup
    on_shutdown = shutdown
    # A million-row workbook takes minutes; the default 300 s would cut it off.
    job_timeout = settings.ingestion_job_timeout_s
    # Long enough for `credit-approval job` and GET /api/ingestions/{id} to read the report later.
    keep_result = RESULT_TTL_S
    # Short, so a monitor notices a stuck worker soon (parsing runs in child processes: the loop stays free).
    health_check_interval = 10
