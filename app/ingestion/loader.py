"""Batches of validated rows -> COPY into TEMP staging tables -> merged into the real tables.

Everything for one file runs inside the caller's transaction: a file loads completely or not at all, and
the identity sequences are moved past the largest id before it commits. Merges only write rows whose
values differ, so running the same file again changes nothing.

Customers (a tenth of the rows) are merged once, at the end of the file. Loans are merged batch by batch,
still inside the one transaction, so PostgreSQL writes batch n while the reader process parses batch n+1:
a single merge at the end would add its whole duration to the load.

Loan IDs: a loan keeps its workbook Loan ID as its loan_id unless that id is already taken, by a row
already in the table or by an earlier new loan of the same file; such a loan is "deferred" and inserted
at the end of the file with a fresh id from the identity sequence (drawn only once the sequence is past
every Loan ID in the file, so a fresh id can never take a Loan ID a later row needs). The workbook's
number stays in source_loan_id. A loan already loaded (same customer and source_loan_id) is updated in
place and keeps whatever loan_id it has.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.ingestion.reader import MAX_REPORTED_ERRORS, RowError, SheetHeader

# Serialises ingestions (two workers, or ARQ running a job twice): one file loads at a time.
_INGESTION_LOCK_KEY = 0x6372_6564_6974  # "credit"

FileKind = Literal["customers", "loans"]


class RowIssue(BaseModel):
    sheet: str = Field(description="Worksheet the row is on.")
    row: int = Field(description="Row number as Excel shows it (the header is usually row 1).")
    column: str = Field(description="Column header as written in the file.")
    reason: str = Field(description="Why the row was skipped.")
    value: str | None = Field(default=None, description="The offending value, as text (null when empty).")


class DuplicateRow(BaseModel):
    row: int = Field(description="Row that was superseded.")
    kept_row: int = Field(description="Later row with the same key that replaced it (last row wins).")
    customer_id: int = Field(description="Customer ID of the row.")
    loan_id: int | None = Field(default=None, description="Workbook Loan ID (loans file only).")


class RekeyedLoan(BaseModel):
    row: int = Field(description="Row of the loan in the loans workbook.")
    customer_id: int = Field(description="Customer the loan belongs to.")
    workbook_loan_id: int = Field(description="Loan ID in the workbook, kept as source_loan_id.")
    loan_id: int = Field(description="loan_id the loan is stored under.")
    held_by_customer_id: int | None = Field(
        default=None, description="Customer whose loan holds the workbook Loan ID as its loan_id."
    )


class FileReport(BaseModel):
    file: FileKind = Field(description="Which workbook: `customers` or `loans`.")
    path: str = Field(description="The workbook's path, as the worker read it.")
    sheet: str = Field(description="The worksheet that was loaded.")
    rows_read: int = Field(description="Non-empty data rows read.")
    inserted: int = Field(description="Rows added to the table.")
    updated: int = Field(description="Existing rows whose values changed.")
    unchanged: int = Field(description="Existing rows the file repeats exactly (nothing written).")
    skipped: int = Field(description="Bad rows not loaded; see `errors`.")
    duplicates: int = Field(description="Rows superseded by a later row with the same key (last row wins).")
    rekeyed: int = Field(description="Loans stored under a loan_id other than their workbook Loan ID.")
    seconds: float = Field(description="Wall time for this file: read, stage and merge.")
    ignored_columns: list[str] = Field(default_factory=list, description="Columns present but not used.")
    derived_columns: list[str] = Field(
        default_factory=list, description="Columns absent from the file and computed (approved_limit)."
    )
    errors: list[RowIssue] = Field(
        default_factory=list, description=f"The first {MAX_REPORTED_ERRORS} row errors, in row order."
    )
    errors_not_shown: int = Field(default=0, description="Row errors beyond those listed.")
    duplicate_rows: list[DuplicateRow] = Field(
        default_factory=list, description=f"The first {MAX_REPORTED_ERRORS} superseded rows."
    )
    rekeyed_loans: list[RekeyedLoan] = Field(default_factory=list, description="Every re-keyed loan.")


class BatchInfo(BaseModel):
    """What the reader says about a batch besides its rows (which come as CSV)."""

    rows: int
    rows_read: int = Field(description="Cumulative for the file.")
    skipped: int
    error_count: int
    errors: list[RowError]
    max_loan_id: int = 0


Executor = AsyncConnection | AsyncSession


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    """COPY's source as an async iterable: asyncpg would take plain bytes for a file name."""
    yield data


async def advance_identity_sequences(conn: Executor) -> None:
    """Move the customers and loans identity sequences past the largest id in their table.

    Rows inserted with explicit ids (ingestion, fixtures) do not move a sequence; without this the next
    identity-generated id collides. Never moves a sequence backwards, so it is safe to call at any time,
    in any transaction (the change is visible to others at once: sequences are not transactional).
    """
    for table, column in (("customers", "customer_id"), ("loans", "loan_id")):
        await _advance_sequence(conn, table, column)


async def _advance_sequence(conn: Executor, table: str, column: str, at_least: int = 0) -> None:
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


class _Loader:
    """One file: `start`, then `add_batch` per batch, then `finish`; all in the caller's transaction."""

    kind: ClassVar[FileKind]
    copy_table: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    ddl: ClassVar[tuple[str, ...]]

    def __init__(self, conn: AsyncConnection, path: str, header: SheetHeader) -> None:
        self.conn = conn
        self.path = path
        self.header = header
        self.started = time.perf_counter()
        self.rows_read = self.skipped = self.error_count = 0
        self.errors: list[RowError] = []
        self.duplicates = 0
        self.duplicate_rows: list[DuplicateRow] = []
        self._driver: Any = None

    async def start(self) -> None:
        await self.conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INGESTION_LOCK_KEY})
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
            await self._driver.copy_to_table(
                self.copy_table, source=_chunks(csv_rows), columns=list(self.columns), format="csv"
            )
            await self._merge_batch(info)

    async def _merge_batch(self, info: BatchInfo) -> None:
        """Per-batch work after the COPY; nothing by default."""

    async def finish(self) -> FileReport:
        raise NotImplementedError

    async def _rows(self, sql: str, **params: Any) -> list[Any]:
        return list((await self.conn.execute(text(sql), params)).all())

    async def _one(self, sql: str, **params: Any) -> Any:
        return (await self.conn.execute(text(sql), params)).one()

    def _reject(self, rows: list[Any], field: str, reason: Any) -> None:
        """Record rows the database side rejected: they count as skipped, with a reason each."""
        self.skipped += len(rows)
        self.error_count += len(rows)
        column = self.header.headers[field]
        room = max(MAX_REPORTED_ERRORS - len(self.errors), 0)
        self.errors.extend(
            RowError(self.header.sheet, r.row_number, column, reason(r), None) for r in rows[:room]
        )

    def _superseded(self, rows: list[Any]) -> None:
        self.duplicates += len(rows)
        room = max(MAX_REPORTED_ERRORS - len(self.duplicate_rows), 0)
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
            seconds=round(time.perf_counter() - self.started, 3),
            ignored_columns=self.header.ignored,
            derived_columns=self.header.derived,
            errors=[RowIssue(**e._asdict()) for e in errors],
            errors_not_shown=self.error_count - len(errors),
            **counts,
        )


class CustomerLoader(_Loader):
    kind = "customers"
    copy_table = "ingest_customers"
    columns = (
        "row_number",
        "customer_id",
        "first_name",
        "last_name",
        "age",
        "phone_number",
        "monthly_salary",
        "approved_limit",
    )
    ddl = (
        """
        CREATE TEMP TABLE ingest_customers (
            row_number integer NOT NULL,
            customer_id bigint NOT NULL,
            first_name text NOT NULL,
            last_name text NOT NULL,
            age smallint,
            phone_number bigint NOT NULL,
            monthly_salary numeric(14, 2) NOT NULL,
            approved_limit numeric(14, 2) NOT NULL
        ) ON COMMIT DROP
        """,
    )

    async def finish(self) -> FileReport:
        # Last row wins for a Customer ID repeated in the file.
        await self.conn.execute(
            text(
                """
                CREATE TEMP TABLE ingest_customers_final ON COMMIT DROP AS
                SELECT DISTINCT ON (customer_id) * FROM ingest_customers ORDER BY customer_id, row_number DESC
                """
            )
        )
        self._superseded(
            await self._rows(
                """
                SELECT s.row_number, f.row_number AS kept_row, s.customer_id, NULL::bigint AS loan_id
                FROM ingest_customers s JOIN ingest_customers_final f USING (customer_id)
                WHERE s.row_number <> f.row_number ORDER BY s.row_number
                """
            )
        )
        await self._drop_phone_conflicts()
        inserted, updated, kept = await self._one(
            """
            WITH written AS (
                INSERT INTO customers AS c (customer_id, first_name, last_name, age, phone_number,
                                            monthly_salary, approved_limit)
                SELECT customer_id, first_name, last_name, age, phone_number, monthly_salary, approved_limit
                FROM ingest_customers_final
                ON CONFLICT (customer_id) DO UPDATE SET
                    first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, age = EXCLUDED.age,
                    phone_number = EXCLUDED.phone_number, monthly_salary = EXCLUDED.monthly_salary,
                    approved_limit = EXCLUDED.approved_limit
                -- A row the file repeats exactly is not rewritten: a second run changes nothing.
                WHERE (c.first_name, c.last_name, c.age, c.phone_number, c.monthly_salary, c.approved_limit)
                      IS DISTINCT FROM (EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.age,
                                        EXCLUDED.phone_number, EXCLUDED.monthly_salary,
                                        EXCLUDED.approved_limit)
                RETURNING xmax = 0 AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
                   (SELECT count(*) FROM ingest_customers_final)
            FROM written
            """
        )
        await advance_identity_sequences(self.conn)
        return self._report(
            inserted=inserted, updated=updated, unchanged=kept - inserted - updated, rekeyed=0
        )

    async def _drop_phone_conflicts(self) -> None:
        """Phone numbers are unique: skip a row whose phone another customer holds, in the table or on an
        earlier row of the file, rather than fail the whole file on the unique constraint."""
        rows = await self._rows(
            """
            WITH held AS (
                SELECT f.row_number, f.phone_number, c.customer_id AS holder, NULL::integer AS holder_row
                FROM ingest_customers_final f
                JOIN customers c ON c.phone_number = f.phone_number AND c.customer_id <> f.customer_id
                UNION ALL
                SELECT row_number, phone_number, first_customer, first_row
                FROM (
                    SELECT row_number, phone_number,
                           first_value(row_number) OVER w AS first_row,
                           first_value(customer_id) OVER w AS first_customer
                    FROM ingest_customers_final
                    WINDOW w AS (PARTITION BY phone_number ORDER BY row_number)
                ) ranked
                WHERE row_number <> first_row
            ),
            conflicts AS (  -- one reason per row: the table's holder first
                SELECT DISTINCT ON (row_number) * FROM held ORDER BY row_number, holder_row NULLS FIRST
            ),
            dropped AS (
                DELETE FROM ingest_customers_final f USING conflicts c WHERE f.row_number = c.row_number
            )
            SELECT * FROM conflicts ORDER BY row_number
            """
        )

        def reason(r: Any) -> str:
            where = f"on row {r.holder_row}" if r.holder_row else "already in the database"
            return f"phone number {r.phone_number} belongs to customer {r.holder} ({where})"

        self._reject(rows, "phone_number", reason)


_LOAN_VALUES = (
    "loan_amount, tenure, interest_rate, monthly_installment, emis_paid_on_time, start_date, end_date"
)
_LOAN_COLUMNS_DDL = """
    customer_id bigint NOT NULL,
    source_loan_id bigint NOT NULL,
    loan_amount numeric(14, 2) NOT NULL,
    tenure integer NOT NULL,
    interest_rate numeric(5, 2) NOT NULL,
    monthly_installment numeric(14, 2) NOT NULL,
    emis_paid_on_time integer NOT NULL,
    start_date date NOT NULL,
    end_date date NOT NULL
"""


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in _LOAN_VALUES.split(", "))


class LoanLoader(_Loader):
    kind = "loans"
    copy_table = "ingest_batch"
    columns = ("row_number", "customer_id", "source_loan_id", *_LOAN_VALUES.split(", "))
    ddl = (
        # One batch as read, then as merged (one row per key, with where it goes).
        f"CREATE TEMP TABLE ingest_batch (row_number integer NOT NULL, {_LOAN_COLUMNS_DDL}) ON COMMIT DROP",
        f"""
        CREATE TEMP TABLE ingest_merge (
            row_number integer NOT NULL,
            first_row integer NOT NULL,
            {_LOAN_COLUMNS_DDL},
            existing_loan_id bigint,
            seen_row integer,
            deferred boolean NOT NULL,
            claim_rank integer NOT NULL
        ) ON COMMIT DROP
        """,
        # Every key of the file so far and the row that last set it: duplicates across batches.
        """
        CREATE TEMP TABLE ingest_seen (
            customer_id bigint NOT NULL,
            source_loan_id bigint NOT NULL,
            row_number integer NOT NULL,
            PRIMARY KEY (customer_id, source_loan_id)
        ) ON COMMIT DROP
        """,
        # New loans whose Loan ID was taken: inserted with fresh ids when the file ends.
        f"""
        CREATE TEMP TABLE ingest_deferred (
            row_number integer NOT NULL,
            first_row integer NOT NULL,
            {_LOAN_COLUMNS_DDL},
            PRIMARY KEY (customer_id, source_loan_id)
        ) ON COMMIT DROP
        """,
    )

    def __init__(self, conn: AsyncConnection, path: str, header: SheetHeader) -> None:
        super().__init__(conn, path, header)
        self.inserted = self.updated = self.existing = 0
        self.max_loan_id = 0
        self.rekeyed: dict[tuple[int, int], RekeyedLoan] = {}

    async def _merge_batch(self, info: BatchInfo) -> None:
        if info.max_loan_id > self.max_loan_id:
            # Past every Loan ID seen so far before claiming any: a loan created through the API meanwhile
            # (nextval) cannot take one of them.
            self.max_loan_id = info.max_loan_id
            await _advance_sequence(self.conn, "loans", "loan_id", self.max_loan_id)
        # Statistics for the planner: without them it guesses a temp table's size and may join a batch
        # of thousands to a million-row table by scanning the big one, once per batch.
        await self.conn.execute(text("ANALYZE ingest_batch"))
        await self._drop_unknown_customers()
        counts = await self._build_merge_set()
        await self.conn.execute(text("ANALYZE ingest_merge"))
        if counts.superseded:
            self._superseded(await self._duplicates())
        if counts.existing:
            self.updated += await self._update_existing()
        if counts.deferred:
            await self._update_deferred()
        if counts.new:
            self.inserted += await self._insert_new()
        await self._remember()
        await self.conn.execute(text("TRUNCATE ingest_batch, ingest_merge"))

    async def _drop_unknown_customers(self) -> None:
        rows = await self._rows(
            """
            DELETE FROM ingest_batch b
            WHERE (SELECT 1 FROM customers c WHERE c.customer_id = b.customer_id) IS NULL
            RETURNING row_number, customer_id
            """
        )
        self._reject(sorted(rows), "customer_id", lambda r: f"unknown customer {r.customer_id}")

    async def _build_merge_set(self) -> Any:
        """One row per (customer, Loan ID) of the batch, the last; where it stands; counts for the rest."""
        counts = await self._one(
            f"""
            WITH last_rows AS (
                SELECT DISTINCT ON (customer_id, source_loan_id) *,
                       min(row_number) OVER (PARTITION BY customer_id, source_loan_id) AS first_row
                FROM ingest_batch
                ORDER BY customer_id, source_loan_id, row_number DESC
            ),
            placed AS MATERIALIZED (  -- each probe once, though several expressions below use it
                SELECT r.*,
                       (SELECT l.loan_id FROM loans l
                        WHERE l.customer_id = r.customer_id AND l.source_loan_id = r.source_loan_id)
                           AS existing_loan_id,
                       (SELECT s.row_number FROM ingest_seen s
                        WHERE s.customer_id = r.customer_id AND s.source_loan_id = r.source_loan_id)
                           AS seen_row,
                       (SELECT true FROM ingest_deferred d
                        WHERE d.customer_id = r.customer_id AND d.source_loan_id = r.source_loan_id)
                           IS NOT NULL AS deferred
                FROM last_rows r
            ),
            merged AS (
                INSERT INTO ingest_merge
                SELECT row_number, first_row, customer_id, source_loan_id, {_LOAN_VALUES},
                       existing_loan_id, seen_row, deferred,
                       -- Among new loans sharing a Loan ID, the first in the file may claim it.
                       row_number() OVER (PARTITION BY existing_loan_id IS NULL AND NOT deferred,
                                          source_loan_id ORDER BY first_row)
                FROM placed
                RETURNING existing_loan_id, seen_row, deferred
            )
            SELECT
                (SELECT count(*) FROM ingest_batch) - count(*) + count(seen_row) AS superseded,
                count(*) FILTER (WHERE existing_loan_id IS NOT NULL) AS existing,
                -- Already in the table before this file: inserted, updated or unchanged by it.
                count(*) FILTER (WHERE existing_loan_id IS NOT NULL AND seen_row IS NULL) AS preexisting,
                count(*) FILTER (WHERE deferred) AS deferred,
                count(*) FILTER (WHERE existing_loan_id IS NULL AND NOT deferred) AS new
            FROM merged
            """
        )
        self.existing += counts.preexisting
        return counts

    async def _duplicates(self) -> list[Any]:
        """Rows superseded by a later row with the same key: within the batch, or from an earlier batch."""
        return await self._rows(
            """
            SELECT b.row_number, m.row_number AS kept_row, b.customer_id, b.source_loan_id AS loan_id
            FROM ingest_batch b JOIN ingest_merge m USING (customer_id, source_loan_id)
            WHERE b.row_number <> m.row_number
            UNION ALL
            SELECT seen_row, row_number, customer_id, source_loan_id
            FROM ingest_merge WHERE seen_row IS NOT NULL
            ORDER BY 1
            """
        )

    async def _update_existing(self) -> int:
        """Update loans already in the table whose values differ; count those new to this file."""
        updated, rekeyed = await self._one(
            f"""
            WITH changed AS (
                UPDATE loans l SET ({_LOAN_VALUES}) = (
                    m.loan_amount, m.tenure, m.interest_rate, m.monthly_installment, m.emis_paid_on_time,
                    m.start_date, m.end_date)
                FROM ingest_merge m
                WHERE m.existing_loan_id = l.loan_id
                  -- An index condition on loans: the planner would rather hash-join the whole table.
                  AND l.loan_id = ANY (ARRAY(SELECT existing_loan_id FROM ingest_merge
                                             WHERE existing_loan_id IS NOT NULL))
                  AND (l.loan_amount, l.tenure, l.interest_rate, l.monthly_installment, l.emis_paid_on_time,
                       l.start_date, l.end_date)
                      IS DISTINCT FROM (m.loan_amount, m.tenure, m.interest_rate, m.monthly_installment,
                                        m.emis_paid_on_time, m.start_date, m.end_date)
                RETURNING m.seen_row
            )
            SELECT (SELECT count(*) FROM changed WHERE seen_row IS NULL),
                   (SELECT count(*) FROM ingest_merge WHERE existing_loan_id <> source_loan_id)
            """
        )
        if rekeyed:  # loaded under another id by an earlier run (or an earlier batch's deferral)
            self._note_rekeyed(
                await self._rows(
                    """
                    SELECT m.row_number, m.customer_id, m.source_loan_id, m.existing_loan_id AS loan_id,
                           (SELECT h.customer_id FROM loans h WHERE h.loan_id = m.source_loan_id) AS holder
                    FROM ingest_merge m
                    WHERE m.existing_loan_id <> m.source_loan_id
                    """
                )
            )
        return int(updated)

    async def _update_deferred(self) -> None:
        """A later row for a key waiting in ingest_deferred replaces it there (last row wins)."""
        await self.conn.execute(
            text(
                f"""
                UPDATE ingest_deferred d SET (row_number, {_LOAN_VALUES}) = (
                    m.row_number, m.loan_amount, m.tenure, m.interest_rate, m.monthly_installment,
                    m.emis_paid_on_time, m.start_date, m.end_date)
                FROM ingest_merge m
                WHERE m.deferred AND d.customer_id = m.customer_id AND d.source_loan_id = m.source_loan_id
                """
            )
        )

    async def _insert_new(self) -> int:
        """Insert new loans under their workbook Loan ID; defer those whose Loan ID is taken.

        ON CONFLICT DO NOTHING is the "is it taken" test: it also covers an id taken by a concurrent
        transaction, which a NOT EXISTS check could miss.
        """
        inserted = await self.conn.execute(
            text(
                f"""
                INSERT INTO loans (loan_id, customer_id, source_loan_id, {_LOAN_VALUES})
                SELECT source_loan_id, customer_id, source_loan_id, {_LOAN_VALUES}
                FROM ingest_merge
                WHERE existing_loan_id IS NULL AND NOT deferred AND claim_rank = 1
                ON CONFLICT DO NOTHING
                """
            )
        )
        # The new loans not in the table now are those whose Loan ID was taken.
        await self.conn.execute(
            text(
                f"""
                INSERT INTO ingest_deferred
                SELECT row_number, first_row, customer_id, source_loan_id, {_LOAN_VALUES}
                FROM ingest_merge m
                WHERE existing_loan_id IS NULL AND NOT deferred
                  -- A scalar subquery, probed per row: NOT EXISTS would become a scan of all loans.
                  AND (SELECT l.loan_id FROM loans l
                       WHERE l.customer_id = m.customer_id AND l.source_loan_id = m.source_loan_id) IS NULL
                """
            )
        )
        return int(inserted.rowcount)

    async def _remember(self) -> None:
        await self.conn.execute(
            text(
                """
                INSERT INTO ingest_seen (customer_id, source_loan_id, row_number)
                SELECT customer_id, source_loan_id, row_number FROM ingest_merge
                ON CONFLICT (customer_id, source_loan_id) DO UPDATE SET row_number = EXCLUDED.row_number
                """
            )
        )

    def _note_rekeyed(self, rows: list[Any]) -> None:
        for r in rows:
            self.rekeyed[(r.customer_id, r.source_loan_id)] = RekeyedLoan(
                row=r.row_number,
                customer_id=r.customer_id,
                workbook_loan_id=r.source_loan_id,
                loan_id=r.loan_id,
                held_by_customer_id=r.holder,
            )

    async def finish(self) -> FileReport:
        await self._insert_deferred()
        await advance_identity_sequences(self.conn)
        rekeyed = sorted(self.rekeyed.values(), key=lambda loan: loan.row)
        return self._report(
            inserted=self.inserted,
            updated=self.updated,
            unchanged=self.existing - self.updated,
            rekeyed=len(rekeyed),
            rekeyed_loans=rekeyed,
        )

    async def _insert_deferred(self) -> None:
        """Fresh ids, in file order, for new loans whose Loan ID was taken. The sequence is already past
        every Loan ID of the file (advanced batch by batch), so no fresh id equals one of them."""
        rows = await self._rows(
            f"""
            WITH fresh AS (
                INSERT INTO loans (loan_id, customer_id, source_loan_id, {_LOAN_VALUES})
                SELECT nextval(pg_get_serial_sequence('loans', 'loan_id')), customer_id, source_loan_id,
                       {_LOAN_VALUES}
                FROM (SELECT * FROM ingest_deferred ORDER BY first_row) in_file_order
                RETURNING loan_id, customer_id, source_loan_id
            )
            SELECT d.row_number, f.customer_id, f.source_loan_id, f.loan_id,
                   (SELECT h.customer_id FROM loans h WHERE h.loan_id = f.source_loan_id) AS holder
            FROM fresh f
            JOIN ingest_deferred d USING (customer_id, source_loan_id)
            """
        )
        self.inserted += len(rows)
        self._note_rekeyed(rows)
