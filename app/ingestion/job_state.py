"""An ingestion job seen from outside: enqueueing it (once per pair of files) and reading its state,
progress and report from Redis. Used by the CLI, the REST endpoint and the job itself."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus, SerializationError
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from sqlalchemy import make_url

from app.config import Settings
from app.import_locks import FileKind
from app.ingestion.report import FileReport

JOB_FUNCTION = "ingest_workbooks"
RESULT_TTL_S = 24 * 3600
"""How long a finished job's report stays readable (ARQ's keep_result and our own keys)."""
FILE_KINDS: tuple[FileKind, ...] = ("customers", "loans")


# A finished job as GET /api/ingestions/{job_id} shows it (the OpenAPI example).
JOB_STATE_EXAMPLE: dict[str, Any] = {
    "job_id": "ingest-3f2a9c0e5b7d41a8a1c2e3f4a5b6c7d8",
    "status": "complete",
    "progress": None,
    "report": {
        "job_id": "ingest-3f2a9c0e5b7d41a8a1c2e3f4a5b6c7d8",
        "status": "complete",
        "customers_path": "/data/customer_data.xlsx",
        "loans_path": "/data/loan_data.xlsx",
        "started_at": "2026-06-15T12:00:00Z",
        "finished_at": "2026-06-15T12:00:02.5Z",
        "seconds": 2.5,
        "files": [
            {
                "file": "customers",
                "path": "/data/customer_data.xlsx",
                "sheet": "Sheet1",
                "rows_read": 300,
                "inserted": 300,
                "updated": 0,
                "unchanged": 0,
                "skipped": 0,
                "duplicates": 0,
                "rekeyed": 0,
                "seconds": 0.4,
            },
            {
                "file": "loans",
                "path": "/data/loan_data.xlsx",
                "sheet": "Sheet1",
                "rows_read": 782,
                "inserted": 782,
                "updated": 0,
                "unchanged": 0,
                "skipped": 0,
                "duplicates": 0,
                "rekeyed": 0,
                "seconds": 1.9,
            },
        ],
        "error": None,
    },
    "error": None,
}


class IngestionFailed(Exception):
    """The job could not load the files; the message says why."""


class FileProgress(BaseModel):
    file: FileKind = Field(description="Which workbook: `customers` or `loans`.")
    stage: Literal["waiting", "reading", "merging", "done"] = Field(
        description="`reading` streams rows into staging; `merging` writes them into the table."
    )
    rows_read: int = Field(description="Non-empty data rows read so far.")
    rows_per_s: float = Field(description="Average read rate since the file was opened.")
    seconds: float = Field(description="Time spent on this file so far.")


class Progress(BaseModel):
    files: list[FileProgress] = Field(description="Per file, in load order.")
    updated_at: dt.datetime = Field(description="When the worker last reported progress (UTC).")


class IngestionReport(BaseModel):
    job_id: str = Field(description="The job's id.")
    status: Literal["complete", "failed"] = Field(description="How the job ended.")
    customers_path: str = Field(description="The customers workbook, as the worker read it.")
    loans_path: str = Field(description="The loans workbook, as the worker read it.")
    started_at: dt.datetime = Field(description="When the worker started the job (UTC).")
    finished_at: dt.datetime = Field(description="When the job ended (UTC).")
    seconds: float = Field(description="Wall time of the whole job, in seconds.")
    files: list[FileReport] = Field(description="Per file, in load order; a file that failed is absent.")
    error: str | None = Field(default=None, description="Why the job failed.")
    worker_peak_rss_mb: float | None = Field(default=None, description="Peak memory of the worker process.")
    reader_peak_rss_mb: float | None = Field(
        default=None, description="Peak memory of the process that parsed the workbooks."
    )
    decisions_held_s: float | None = Field(
        default=None,
        description="How long create-loan answered 503 `import-in-progress` for the customers an import "
        "can change: from the job taking its lock until its loans committed.",
    )


class JobState(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [JOB_STATE_EXAMPLE]})

    job_id: str = Field(description="The job's id, derived from the two files' contents.")
    status: Literal["queued", "in_progress", "complete", "failed"] = Field(
        description="`queued`, then `in_progress`, then `complete` or `failed`."
    )
    progress: Progress | None = Field(default=None, description="Rows read per file (while running).")
    report: IngestionReport | None = Field(default=None, description="The outcome, once finished.")
    error: str | None = Field(default=None, description="Why the job failed, when it did.")


def _progress_key(job_id: str) -> str:
    return f"credit-approval:ingestion:{job_id}:progress"


def report_key(job_id: str) -> str:
    return f"credit-approval:ingestion:{job_id}:report"


def job_namespace(settings: Settings) -> str:
    """What besides the files makes a job distinct: where it runs (queue) and what it loads into."""
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    return f"{settings.arq_queue_name}|{database}"


def job_id_for(customers: Path, loans: Path, namespace: str) -> str:
    """The job id is a hash of both files' contents and the namespace (so two deployments or databases
    sharing a Redis never alias): enqueueing the same files again while the job exists is a no-op."""
    digest = hashlib.sha256(namespace.encode() + b"\0")
    for path in (customers, loans):
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return "ingest-" + digest.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Enqueued:
    job_id: str = ""
    created: bool = False
    note: str = ""  # what --force did, in words for the operator


async def enqueue_ingestion(
    redis: ArqRedis,
    job_id: str,
    customers: Path,
    loans: Path,
    *,
    queue_name: str | None = None,
    force: bool = False,
) -> Enqueued:
    """Enqueue the job under `job_id` (on `queue_name`, else the pool's default queue). Without `force`,
    nothing happens when that job already exists (queued, running or kept).

    `force` always starts a new run, whatever state an earlier one was left in: a finished one's kept
    result is dropped and the id reused; a queued or running one (perhaps stuck, perhaps with a dead
    worker) is left alone and the new run gets an id of its own. Runs of one kind of file are serialised
    in PostgreSQL, and a run is idempotent, so two runs of the same files are harmless.
    """
    note = ""
    if force:
        status = await Job(job_id, redis, _queue_name=queue_name or redis.default_queue_name).status()
        if status == JobStatus.complete:
            await redis.delete(f"arq:result:{job_id}", report_key(job_id), _progress_key(job_id))
            note = f"the earlier run {job_id} had finished: its report was dropped and the files run again"
        elif status != JobStatus.not_found:
            earlier, job_id = job_id, f"{job_id}-{uuid.uuid4().hex[:8]}"
            note = (
                f"the earlier run {earlier} is still {status.value} (left as it is: a stuck one fails by "
                f"the watchdog, a dead worker's is taken up again); started a new run {job_id}"
            )
    job = await redis.enqueue_job(
        JOB_FUNCTION, str(customers), str(loans), _job_id=job_id, _queue_name=queue_name
    )
    return Enqueued(job_id, job is not None, note)


async def get_job_state(redis: ArqRedis, job_id: str, queue_name: str) -> JobState | None:
    """The job's status, progress and report; None when Redis knows nothing of it."""
    job = Job(job_id, redis, _queue_name=queue_name)
    status = await job.status()
    progress_raw, report_raw = await redis.mget(_progress_key(job_id), report_key(job_id))
    progress = Progress.model_validate_json(progress_raw) if progress_raw else None
    report = IngestionReport.model_validate_json(report_raw) if report_raw else None
    if status in (JobStatus.queued, JobStatus.deferred):
        return JobState(job_id=job_id, status="queued")
    if status == JobStatus.in_progress:
        return JobState(job_id=job_id, status="in_progress", progress=progress)
    if report is not None:  # also outlives ARQ's copy of the result if that was removed
        return JobState(
            job_id=job_id, status=report.status, progress=progress, report=report, error=report.error
        )
    if status == JobStatus.complete:  # failed before our report was written: timeout, expiry, crash
        error = await _failure_reason(job)
        return JobState(job_id=job_id, status="failed", progress=progress, error=error)
    return None


async def _failure_reason(job: Job) -> str:
    """What ARQ recorded for a job that ended without writing our report."""
    try:
        info = await job.result_info()
    except SerializationError as exc:
        return f"the job failed and its result cannot be read: {exc}"
    if info is None or info.success:
        return "the job ended without a report"
    return str(info.result) or type(info.result).__name__  # TimeoutError() has no message


class ProgressTracker:
    """Rows read and rate per file, written to Redis after each batch (a few hundred writes per 1M rows)."""

    def __init__(self, redis: Redis, job_id: str) -> None:
        self.redis = redis
        self.key = _progress_key(job_id)
        self.files = {
            kind: FileProgress(file=kind, stage="waiting", rows_read=0, rows_per_s=0, seconds=0)
            for kind in FILE_KINDS
        }
        self.started: dict[str, float] = {}

    def start(self, kind: FileKind) -> None:
        self.started[kind] = time.perf_counter()

    async def update(
        self, kind: FileKind, rows_read: int, stage: Literal["reading", "merging", "done"] = "reading"
    ) -> None:
        seconds = time.perf_counter() - self.started[kind]
        self.files[kind] = FileProgress(
            file=kind,
            stage=stage,
            rows_read=rows_read,
            rows_per_s=round(rows_read / seconds, 1) if seconds > 0 else 0.0,
            seconds=round(seconds, 3),
        )
        progress = Progress(files=list(self.files.values()), updated_at=dt.datetime.now(dt.UTC))
        await self.redis.set(self.key, progress.model_dump_json(), ex=RESULT_TTL_S)
