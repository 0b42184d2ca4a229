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
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal, TypeVar

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import metrics
from app.config import Settings
from app.credit.policy import POLICY, Policy
from app.db import create_engine
from app.import_locks import IMPORT_RUNNING_KEY, FileKind
from app.ingestion.customer_loader import CustomerLoader
from app.ingestion.job_state import (
    FILE_KINDS,
    RESULT_TTL_S,
    IngestionFailed,
    IngestionReport,
    ProgressTracker,
    report_key,
)
from app.ingestion.loan_loader import LoanLoader
from app.ingestion.reader import peak_rss_kb
from app.ingestion.reader_process import ReaderProcess
from app.ingestion.report import FileReport
from app.ingestion.rows import WorkbookError

_T = TypeVar("_T")
_MAX_REASON = 2_000


def worker_engine(settings: Settings) -> AsyncEngine:
    """The worker's engine: few connections, and statement/lock timeouts sized for a million-row merge
    (the web's are seconds). Each ingestion job builds its own (`job_engine`); this one serves the rest."""
    budget_ms = settings.ingestion_job_timeout_s * 1000
    return create_engine(
        settings.model_copy(update={"db_statement_timeout_ms": budget_ms}),
        pool_size=2,
        timeouts_per_transaction=True,
    )


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
    tracker = ProgressTracker(redis, job_id)
    reports: list[FileReport] = []
    # How long this job held create-loan off (the report reads it): from taking the import lock to commit.
    held_s: float | None = None
    # One reader process per file, both started now: the loans file is parsed on the second core while
    # the customers file loads, instead of after it.
    readers = {kind: ReaderProcess(kind, paths[kind], settings, policy) for kind in FILE_KINDS}

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
    tracker: ProgressTracker,
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
    await redis.set(report_key(job_id), report.model_dump_json(), ex=RESULT_TTL_S)
