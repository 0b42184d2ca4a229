"""The ingestion job: two workbooks -> PostgreSQL, customers first, one transaction per file.

`ingest_workbooks` is an ARQ job function. ARQ delivers at least once, so the job relies only on the
loader's merge being idempotent: running it again, or twice at once (the loader serialises files with an
advisory lock), leaves the same rows. Parsing is CPU-bound and runs in one child process per workbook,
each streaming batches over a pipe (a bounded queue: a full pipe blocks the child); the worker's event loop
meanwhile COPYs and merges the previous batch, and its health checks keep running. Both files are read
from the start: the loans transaction opens beside the customers one and holds its batches in a staging
table until the customers have committed. Progress goes to Redis after every batch; the report is the
job's result and is also kept under its own key, so a failed job has one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import resource
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal, Self

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus, SerializationError
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.config import Settings
from app.db import create_engine
from app.ingestion.loader import BatchInfo, CustomerLoader, FileKind, FileReport, LoanLoader
from app.ingestion.reader import SheetHeader, WorkbookError, read_frame

JOB_FUNCTION = "ingest_workbooks"
RESULT_TTL_S = 24 * 3600
"""How long a finished job's report stays readable (ARQ's keep_result and our own keys)."""
READ_AHEAD_BYTES = 2 << 20
"""How far a reader process may run ahead of the writer (asyncio buffers up to twice this): ~60k loan
rows as CSV, enough to smooth the hand-over; more would only be memory."""
_KINDS: tuple[FileKind, ...] = ("customers", "loans")
_MAX_REASON = 2_000
# The reader runs as `python -m app.ingestion.reader`: make sure the child finds this package.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


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


class JobState(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [JOB_STATE_EXAMPLE]})

    job_id: str = Field(description="The job's id, derived from the two files' contents.")
    status: Literal["queued", "in_progress", "complete", "failed"] = Field(
        description="`queued`, then `in_progress`, then `complete` or `failed`."
    )
    progress: Progress | None = Field(default=None, description="Rows read per file (while running).")
    report: IngestionReport | None = Field(default=None, description="The outcome, once finished.")
    error: str | None = Field(default=None, description="Why the job failed, when it did.")


# --------------------------------------------------------------------------------------------------
# Enqueueing and reading a job's state: used by the CLI and the REST endpoint.


def _progress_key(job_id: str) -> str:
    return f"credit-approval:ingestion:{job_id}:progress"


def _report_key(job_id: str) -> str:
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


async def enqueue_ingestion(
    redis: ArqRedis,
    job_id: str,
    customers: Path,
    loans: Path,
    *,
    queue_name: str | None = None,
    force: bool = False,
) -> bool:
    """Enqueue the job under `job_id` (on `queue_name`, else the pool's default queue); False when that
    job already exists (queued, running or kept).

    `force` re-runs a finished job (its kept result is dropped first); a queued or running one is never
    enqueued twice.
    """
    if force and await Job(job_id, redis).status() == JobStatus.complete:
        await redis.delete(f"arq:result:{job_id}", _report_key(job_id), _progress_key(job_id))
    job = await redis.enqueue_job(
        JOB_FUNCTION, str(customers), str(loans), _job_id=job_id, _queue_name=queue_name
    )
    return job is not None


async def get_job_state(redis: ArqRedis, job_id: str, queue_name: str) -> JobState | None:
    """The job's status, progress and report; None when Redis knows nothing of it."""
    job = Job(job_id, redis, _queue_name=queue_name)
    status = await job.status()
    progress_raw, report_raw = await redis.mget(_progress_key(job_id), _report_key(job_id))
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


# --------------------------------------------------------------------------------------------------
# The job.


def worker_engine(settings: Settings) -> AsyncEngine:
    """The worker's engine: few connections, and statement/lock timeouts sized for a million-row merge
    (the web's are seconds)."""
    budget_ms = settings.ingestion_job_timeout_s * 1000
    return create_engine(settings.model_copy(update={"db_statement_timeout_ms": budget_ms}), pool_size=2)


async def ingest_workbooks(ctx: dict[str, Any], customers_path: str, loans_path: str) -> dict[str, Any]:
    """Load the customers workbook, then the loans workbook; return the report (a JSON-ready dict)."""
    settings: Settings = ctx["settings"]
    engine: AsyncEngine = ctx["engine"]
    redis: Redis = ctx["redis"]
    job_id: str = ctx.get("job_id") or "direct"
    started_at, started = dt.datetime.now(dt.UTC), time.perf_counter()
    paths: dict[FileKind, Path] = {"customers": Path(customers_path), "loans": Path(loans_path)}
    tracker = _ProgressTracker(redis, job_id)
    reports: list[FileReport] = []
    # One reader process per file, both started now: the loans file is parsed on the second core while
    # the customers file loads, instead of after it.
    readers = {kind: ReaderProcess(kind, paths[kind], settings.ingestion_batch_rows) for kind in _KINDS}

    def report(status: Literal["complete", "failed"], error: str | None = None) -> IngestionReport:
        return IngestionReport(
            job_id=job_id,
            status=status,
            customers_path=customers_path,
            loans_path=loans_path,
            started_at=started_at,
            finished_at=dt.datetime.now(dt.UTC),
            seconds=round(time.perf_counter() - started, 3),
            files=reports,
            error=error,
            worker_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            reader_peak_rss_mb=round(max(r.peak_rss_kb for r in readers.values()) / 1024, 1) or None,
        )

    try:
        async with AsyncExitStack() as stack:
            for reader in readers.values():
                await stack.enter_async_context(reader)
            # Both headers before any row: a missing column or an unreadable loans file fails the job
            # before the customers file is written.
            headers = {kind: await reader.header() for kind, reader in readers.items()}
            # The loans transaction starts now too, holding its batches (in PostgreSQL, not in memory)
            # until the customers file is committed: its rows must find their customers.
            customers_loaded = asyncio.Event()
            loans = asyncio.create_task(
                _load_file(
                    engine,
                    LoanLoader(paths["loans"], headers["loans"], customers_loaded=customers_loaded),
                    readers["loans"],
                    tracker,
                )
            )
            try:
                reports.append(
                    await _load_file(
                        engine,
                        CustomerLoader(paths["customers"], headers["customers"]),
                        readers["customers"],
                        tracker,
                    )
                )
                customers_loaded.set()
                reports.append(await loans)
            finally:
                if not loans.done():  # the customers file failed: the loans transaction rolls back
                    loans.cancel()
                    await asyncio.gather(loans, return_exceptions=True)
    except (WorkbookError, IngestionFailed) as exc:
        await _store(redis, job_id, report("failed", str(exc)))
        raise IngestionFailed(str(exc)) from None
    except Exception as exc:
        # A database error's text can quote a whole statement: enough to diagnose, not a page.
        reason = f"{type(exc).__name__}: {exc}"[:_MAX_REASON]
        await _store(redis, job_id, report("failed", reason))
        raise IngestionFailed(reason) from exc
    done = report("complete")
    await _store(redis, job_id, done)
    return done.model_dump(mode="json")


async def _load_file(
    engine: AsyncEngine, loader: CustomerLoader | LoanLoader, reader: ReaderProcess, tracker: _ProgressTracker
) -> FileReport:
    """One file in one transaction: its batches as they come, then the end-of-file merge."""
    kind = loader.kind
    tracker.start(kind)
    async with engine.begin() as conn:
        await loader.start(conn)
        async for info, rows in reader.batches():
            await loader.add_batch(info, rows)
            await tracker.update(kind, info.rows_read)
        await tracker.update(kind, loader.rows_read, stage="merging")
        file_report = await loader.finish()
    _count_rows(file_report)  # once committed: a rolled-back file loaded nothing
    await tracker.update(kind, loader.rows_read, stage="done")
    return file_report


def _count_rows(report: FileReport) -> None:
    for outcome in ("inserted", "updated", "unchanged", "skipped", "duplicates"):
        metrics.record_ingestion_rows(report.file, outcome, getattr(report, outcome))


async def _store(redis: Redis, job_id: str, report: IngestionReport) -> None:
    await redis.set(_report_key(job_id), report.model_dump_json(), ex=RESULT_TTL_S)


class ReaderProcess:
    """`python -m app.ingestion.reader` parsing one workbook on its own core, frames over its stdout.

    The pipe plus this side's read buffer (at most 2 x READ_AHEAD_BYTES) is the bounded queue between
    parsing and writing: when the writer falls behind, the child blocks on a full pipe.
    """

    def __init__(self, kind: FileKind, path: Path, batch_rows: int) -> None:
        self.kind = kind
        self.path = path
        self.batch_rows = batch_rows
        self._process: asyncio.subprocess.Process | None = None
        self.peak_rss_kb = 0  # the child's, once it finished the file

    async def __aenter__(self) -> Self:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.ingestion.reader",
            "--batch-rows",
            str(self.batch_rows),
            f"{self.kind}={self.path}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            limit=READ_AHEAD_BYTES,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [_PROJECT_ROOT, os.environ.get("PYTHONPATH")])),
            },
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            process.kill()  # the job failed or was cancelled mid-file: stop parsing
        await process.wait()

    async def _next(self) -> tuple[dict[str, Any], bytes]:
        assert self._process is not None and self._process.stdout is not None
        try:
            meta, payload = await read_frame(self._process.stdout)
        except asyncio.IncompleteReadError:
            code = await self._process.wait()
            raise IngestionFailed(f"the workbook reader exited unexpectedly (exit status {code})") from None
        if meta["type"] == "error":
            raise WorkbookError(meta["message"])
        return meta, payload

    async def header(self) -> SheetHeader:
        meta, _ = await self._next()
        return SheetHeader(**meta["files"][self.kind])

    async def batches(self) -> AsyncIterator[tuple[BatchInfo, bytes]]:
        while True:
            meta, payload = await self._next()
            if meta["type"] == "end":
                self.peak_rss_kb = meta["peak_rss_kb"]
                return
            yield BatchInfo.model_validate(meta), payload


class _ProgressTracker:
    """Rows read and rate per file, written to Redis after each batch (a few hundred writes per 1M rows)."""

    def __init__(self, redis: Redis, job_id: str) -> None:
        self.redis = redis
        self.key = _progress_key(job_id)
        self.files = {
            kind: FileProgress(file=kind, stage="waiting", rows_read=0, rows_per_s=0, seconds=0)
            for kind in _KINDS
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
