"""Loading one file: batches of validated rows -> COPY into TEMP staging tables -> merged into the real
tables. This module holds what the two loaders (customer_loader, loan_loader) share.

Everything for one file runs inside the caller's transaction: a file loads completely or not at all, and
the identity sequences are moved past the largest id before it commits. Merges only write rows whose
values differ, so running the same file again changes nothing.

Customers (a tenth of the rows) are merged once, at the end of their file. Loans are inserted batch by
batch, still inside the one transaction, so PostgreSQL writes batch n while the reader process parses
batch n+1: one merge at the end would add its whole duration to the load.

Customer IDs: see CustomerLoader. A loans file's Customer ID is the import's own key (source_customer_id):
its loans follow the customer an import created under that id, whatever customer_id it was stored under.

Loan IDs: a new loan takes its workbook Loan ID as its loan_id, first come (in file order) first served.
A row the batch insert cannot place is set aside and settled when the file ends: a key already in the
table is updated in place (keeping whatever loan_id it has), a repeated key's last row wins, and a new
loan whose Loan ID was taken (by a row already in the table, or an earlier row of the file) gets a fresh
id from the identity sequence, keeping the workbook's number in source_loan_id. Fresh ids are drawn only
once the sequence is past every Loan ID of the file, so one can never take a Loan ID a later row needs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.import_locks import INGESTION_LOCK_KEYS, FileKind
from app.ingestion.report import MAX_LISTED, BatchInfo, DuplicateRow, FileReport, RowIssue
from app.ingestion.rows import MAX_REPORTED_ERRORS, RowError
from app.ingestion.sheet import SheetHeader

Executor = AsyncConnection | AsyncSession


def prefixed(alias: str, values: str) -> str:
    """`a, b` -> `x.a, x.b`: a column list qualified by a table alias."""
    return ", ".join(f"{alias}.{column}" for column in values.split(", "))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    """COPY's source as an async iterable: asyncpg would take plain bytes for a file name."""
    yield data


def row_total(rows: list[Any]) -> int:
    """The count a listing query carries on each row (`count(*) OVER ()`): all the rows, listed or not."""
    return int(rows[0].total) if rows else 0


async def advance_identity_sequences(conn: Executor) -> None:
    """Move the customers and loans identity sequences past the largest id in their table.

    Rows inserted with explicit ids (ingestion, fixtures) do not move a sequence; without this the next
    identity-generated id collides. Never moves a sequence backwards, so it is safe to call at any time,
    in any transaction (the change is visible to others at once: sequences are not transactional).
    """
    for table, column in (("customers", "customer_id"), ("loans", "loan_id")):
        await advance_sequence(conn, table, column)


async def advance_sequence(conn: Executor, table: str, column: str, at_least: int = 0) -> None:
    # setval(seq, n, true): the next value is n + 1. With nothing to skip, (1, false): the next value is 1.
    await conn.execute(
        text(
            f"""
            WITH seq AS (SELECT pg_get_serial_sequence('{table}', '{column}')::regclass AS id),
            top AS (
                SELECT GREATEST(
                    (SELECT COALESCE(MAX({column}), 0) FROM {table}),
                    COALESCE(pg_sequence_last_value((SELECT id FROM seq)), 0),
                    CAST(:at_least AS bigint)
                ) AS value
            )
            SELECT setval((SELECT id FROM seq), GREATEST(value, 1), value >= 1) FROM top
            """
        ),
        {"at_least": at_least},
    )


class Loader:
    """One file: `start`, then `add_batch` per batch, then `finish`; all in the caller's transaction."""

    kind: ClassVar[FileKind]
    copy_table: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    ddl: ClassVar[tuple[str, ...]]

    def __init__(self, path: str | Path, header: SheetHeader) -> None:
        self.path = str(path)
        self.header = header
        self.started = time.perf_counter()
        self.rows_read = self.skipped = self.error_count = 0
        self.errors: list[RowError] = []
        self.duplicates = 0
        self.duplicate_rows: list[DuplicateRow] = []
        self._driver: Any = None

    async def start(self, conn: AsyncConnection) -> None:
        """Begin on `conn`, in its transaction: wait for any other ingestion of this kind of file."""
        self.conn = conn
        # Serialise ingestions (two workers, or ARQ running a job twice). The loans key also holds off
        # create-loan for imported customers until this job commits (app/import_locks.py).
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": INGESTION_LOCK_KEYS[self.kind]}
        )
        for statement in self.ddl:
            await self.conn.execute(text(statement))
        raw = await self.conn.get_raw_connection()
        self._driver = raw.driver_connection  # asyncpg: COPY is not part of the DB-API

    async def add_batch(self, info: BatchInfo, csv_rows: bytes) -> None:
        self.rows_read = info.rows_read
        self.skipped += info.skipped
        self.error_count += info.error_count
        self.errors.extend(info.errors)
        if info.rows:
            await self._stage(info, csv_rows)

    async def _stage(self, info: BatchInfo, csv_rows: bytes) -> None:
        await self._copy(self.copy_table, csv_rows)

    async def _copy(self, table: str, csv_rows: bytes) -> None:
        await self._driver.copy_to_table(
            table, source=_chunks(csv_rows), columns=list(self.columns), format="csv"
        )

    async def finish(self) -> FileReport:
        raise NotImplementedError

    async def _rows(self, sql: str, **params: Any) -> list[Any]:
        return list((await self.conn.execute(text(sql), params)).all())

    async def _one(self, sql: str, **params: Any) -> Any:
        return (await self.conn.execute(text(sql), params)).one()

    def _room(self) -> int:
        """How many more row errors the report lists."""
        return max(MAX_REPORTED_ERRORS - len(self.errors), 0)

    def _reject(self, rows: list[Any], field: str, reason: Any, total: int | None = None) -> None:
        """Record rows the database side rejected: they count as skipped, with a reason each. `rows` may
        be only the first few of `total` (the rest were counted in SQL)."""
        total = len(rows) if total is None else total
        self.skipped += total
        self.error_count += total
        column = self.header.headers[field]
        room = max(MAX_REPORTED_ERRORS - len(self.errors), 0)
        self.errors.extend(
            RowError(self.header.sheet, r.row_number, column, reason(r), None) for r in rows[:room]
        )

    def _superseded(self, rows: list[Any]) -> None:
        """`rows`: the first MAX_LISTED superseded rows, each carrying the `total` counted in SQL."""
        self.duplicates += row_total(rows)
        room = max(MAX_LISTED - len(self.duplicate_rows), 0)
        self.duplicate_rows.extend(
            DuplicateRow(row=r.row_number, kept_row=r.kept_row, customer_id=r.customer_id, loan_id=r.loan_id)
            for r in rows[:room]
        )

    def _report(self, **counts: Any) -> FileReport:
        errors = sorted(self.errors, key=lambda e: (e.row, e.column))[:MAX_REPORTED_ERRORS]
        return FileReport(
            file=self.kind,
            path=self.path,
            sheet=self.header.sheet,
            rows_read=self.rows_read,
            skipped=self.skipped,
            duplicates=self.duplicates,
            duplicate_rows=sorted(self.duplicate_rows, key=lambda d: d.row),
            duplicates_not_shown=self.duplicates - len(self.duplicate_rows),
            seconds=round(time.perf_counter() - self.started, 3),
            ignored_columns=self.header.ignored,
            derived_columns=self.header.derived,
            errors=[RowIssue(**e._asdict()) for e in errors],
            errors_not_shown=self.error_count - len(errors),
            **counts,
        )
