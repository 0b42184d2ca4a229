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
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.jobs import Job, JobStatus, SerializationError
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import metrics
from app.config import Settings
from app.credit.policy import POLICY, Policy
from app.db import create_engine
from app.import_locks import IMPORT_RUNNING_KEY
from app.ingestion.loader import BatchInfo, CustomerLoader, FileKind, FileReport, LoanLoader
from app.ingestion.reader import peak_rss_kb, read_frame
from app.ingestion.rows import WorkbookError
from app.ingestion.sheet import SheetHeader

JOB_FUNCTION = "ingest_workbooks"
RESULT_TTL_S = 24 * 3600
"""How long a finished job's report stays readable (ARQ's keep_result and our own keys)."""
READ_AHEAD_BYTES = 2 << 20
"""How far a reader process may run ahead of the writer (asyncio buffers up to twice this): ~60k loan
rows as CSV, enough to smooth the hand-over; more would only be memory."""
_KINDS: tuple[FileKind, ...] = ("customers", "loans")
_T = TypeVar("_T")
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
            await redis.delete(f"arq:result:{job_id}", _report_key(job_id), _progress_key(job_id))
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
    (the web's are seconds). Each ingestion job builds its own (`job_engine`); this one serves the rest."""
    budget_ms = settings.ingestion_job_timeout_s * 1000
    return create_engine(settings.model_copy(update={"db_statement_timeout_ms": budget_ms}), pool_size=2)


def job_engine(settings: Settings) -> AsyncEngine:
    """One ingestion job's own two connections (customers and loans), disposed when it ends: a stuck job
    can hold its own, never another job's."""
    return worker_engine(settings)


async def _keep_lease(redis: Redis, job_id: str, lease_s: int) -> None:
    """Keep ARQ's in-progress key alive for `lease_s` at a time, instead of the whole job timeout.

    ARQ sets that key for job_timeout + 10 s (an hour) and no other worker touches the job while it
    exists: a worker killed mid-job left it untouched for an hour. Renewed every lease/3 s, the key
    lapses within `lease_s` of the worker's death, and a running worker's next poll takes the job up
    again (ARQ's own retry: the job is still in the queue until a worker finishes it).
    """
    key = in_progress_key_prefix + job_id
    while True:
        await redis.pexpire(key, lease_s * 1000)
        await asyncio.sleep(lease_s / 3)


async def _watched(awaitable: Awaitable[_T], seconds: float, kind: FileKind) -> _T:
    """`awaitable`, failing the job when the reader sends nothing for `seconds` (the watchdog).

    asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives as the
    awaited frame does, and the loans task, cancelled because the customers file failed, would read on.
    """
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise IngestionFailed(
            f"the {kind} workbook reader sent nothing for {seconds:g} s and was stopped (watchdog)"
        ) from None


async def _bounded(frames: AsyncIterator[_T], seconds: float, kind: FileKind) -> AsyncIterator[_T]:
    """`frames`, each under the watchdog."""
    iterator = aiter(frames)
    while True:
        try:
            item = await _watched(anext(iterator), seconds, kind)
        except StopAsyncIteration:
            return
        yield item


async def ingest_workbooks(ctx: dict[str, Any], customers_path: str, loans_path: str) -> dict[str, Any]:
    """Load the customers workbook, then the loans workbook; return the report (a JSON-ready dict)."""
    settings: Settings = ctx["settings"]
    redis: Redis = ctx["redis"]
    job_id: str = ctx.get("job_id") or "direct"
    lease = asyncio.create_task(_keep_lease(redis, job_id, settings.ingestion_lease_s))
    # The worker's loaded policy (its approved-limit rule fills an absent Approved Limit column).
    policy: Policy = ctx.get("policy") or POLICY
    engine = job_engine(settings)
    try:
        return await _ingest(settings, policy, engine, redis, job_id, customers_path, loans_path)
    finally:
        lease.cancel()
        await asyncio.gather(lease, return_exceptions=True)
        await engine.dispose()


async def _ingest(
    settings: Settings,
    policy: Policy,
    engine: AsyncEngine,
    redis: Redis,
    job_id: str,
    customers_path: str,
    loans_path: str,
) -> dict[str, Any]:
    started_at, started = dt.datetime.now(dt.UTC), time.perf_counter()
    paths: dict[FileKind, Path] = {"customers": Path(customers_path), "loans": Path(loans_path)}
    tracker = _ProgressTracker(redis, job_id)
    reports: list[FileReport] = []
    # How long this job held create-loan off (the report reads it): from taking the import lock to commit.
    held_s: float | None = None
    # One reader process per file, both started now: the loans file is parsed on the second core while
    # the customers file loads, instead of after it.
    readers = {kind: ReaderProcess(kind, paths[kind], settings, policy) for kind in _KINDS}

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
            worker_peak_rss_mb=round(peak_rss_kb() / 1024, 1),
            reader_peak_rss_mb=round(max(r.peak_rss_kb for r in readers.values()) / 1024, 1) or None,
            decisions_held_s=None if held_s is None else round(held_s, 3),
        )

    try:
        async with AsyncExitStack() as stack:
            # The loans transaction opens first and takes the import lock: from here until it commits,
            # create-loan refuses customers this job can change (app/import_locks.py), and a second
            # import waits. Its batches are held (in PostgreSQL, not in memory) until the customers file
            # has committed: its rows must find their customers.
            loans_conn = await stack.enter_async_context(engine.connect())
            await loans_conn.begin()
            await loans_conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": IMPORT_RUNNING_KEY})
            locked_at = time.perf_counter()
            for reader in readers.values():
                await stack.enter_async_context(reader)
            # Both headers before any row: a missing column or an unreadable loans file fails the job
            # before the customers file is written.
            stall = settings.ingestion_stall_timeout_s
            headers = {kind: await _watched(reader.header(), stall, kind) for kind, reader in readers.items()}
            customers_loaded = asyncio.Event()
            loans = asyncio.create_task(
                _load_file(
                    loans_conn,
                    LoanLoader(paths["loans"], headers["loans"], customers_loaded=customers_loaded),
                    readers["loans"],
                    tracker,
                    stall,
                )
            )
            try:
                async with engine.connect() as customers_conn:
                    await customers_conn.begin()
                    reports.append(
                        await _load_file(
                            customers_conn,
                            CustomerLoader(paths["customers"], headers["customers"]),
                            readers["customers"],
                            tracker,
                            stall,
                        )
                    )
                customers_loaded.set()
                reports.append(await loans)
                held_s = time.perf_counter() - locked_at
            finally:
                # The customers file failed: stop the loans task (its transaction rolls back). Again until
                # it is done: a cancellation can be absorbed on the way (a library catching it), and the
                # task would then wait for customers that never commit.
                while not loans.done():
                    loans.cancel()
                    await asyncio.wait({loans}, timeout=1)
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
    conn: AsyncConnection,
    loader: CustomerLoader | LoanLoader,
    reader: ReaderProcess,
    tracker: _ProgressTracker,
    stall_s: float,
) -> FileReport:
    """One file in `conn`'s transaction, committed here: its batches as they come, then the end-of-file
    merge. On any error the caller's connection rolls the file back."""
    kind = loader.kind
    tracker.start(kind)
    await loader.start(conn)
    async for info, rows in _bounded(reader.batches(), stall_s, kind):
        await loader.add_batch(info, rows)
        await tracker.update(kind, info.rows_read)
    await tracker.update(kind, loader.rows_read, stage="merging")
    file_report = await loader.finish()
    await conn.commit()
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

    def __init__(self, kind: FileKind, path: Path, settings: Settings, policy: Policy = POLICY) -> None:
        self.kind = kind
        self.path = path
        self.batch_rows = settings.ingestion_batch_rows
        # The reader's bounds on a hostile file, as its command-line options.
        self.limit_options = [
            f"--max-part-mb={settings.ingestion_max_part_mb}",
            f"--max-shared-strings-mb={settings.ingestion_max_shared_strings_mb}",
            f"--max-shared-strings={settings.ingestion_max_shared_strings}",
            f"--memory-mb={settings.ingestion_reader_memory_mb}",
            # The policy's limit rule, for files without an Approved Limit column.
            f"--limit-multiplier={policy.limit_income_multiplier}",
            f"--limit-rounding-unit={policy.limit_rounding_unit}",
        ]
        self._process: asyncio.subprocess.Process | None = None
        self.peak_rss_kb = 0  # the child's, once it finished the file (or failed it)

    async def __aenter__(self) -> Self:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.ingestion.reader",
            "--batch-rows",
            str(self.batch_rows),
            *self.limit_options,
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
            self.peak_rss_kb = meta.get("peak_rss_kb", self.peak_rss_kb)
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
