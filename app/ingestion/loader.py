"""Batches of validated rows -> COPY into TEMP staging tables -> merged into the real tables.

Everything for one file runs inside the caller's transaction: a file loads completely or not at all, and
the identity sequences are moved past the largest id before it commits. Merges only write rows whose
values differ, so running the same file again changes nothing.

Customers (a tenth of the rows) are merged once, at the end of their file. Loans are inserted batch by
batch, still inside the one transaction, so PostgreSQL writes batch n while the reader process parses
batch n+1: one merge at the end would add its whole duration to the load.

Loan IDs: a new loan takes its workbook Loan ID as its loan_id, first come (in file order) first served.
A row the batch insert cannot place is set aside and settled when the file ends: a key already in the
table is updated in place (keeping whatever loan_id it has), a repeated key's last row wins, and a new
loan whose Loan ID was taken (by a row already in the table, or an earlier row of the file) gets a fresh
id from the identity sequence, keeping the workbook's number in source_loan_id. Fresh ids are drawn only
once the sequence is past every Loan ID of the file, so one can never take a Loan ID a later row needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.ingestion.reader import MAX_REPORTED_ERRORS, RowError, SheetHeader

MAX_LISTED_REKEYED = 10_000
"""Re-keyed loans listed in a report: all of a real export's; a bound on memory for a synthetic giant."""

# Serialise ingestions (two workers, or ARQ running a job twice): one customers file and one loans file
# load at a time. Two keys, always taken customers first within a job, so jobs cannot deadlock.
_LOCK_KEYS = {"customers": 0x6372_6564_6974_01, "loans": 0x6372_6564_6974_02}

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
    rekeyed_loans: list[RekeyedLoan] = Field(
        default_factory=list,
        description=f"Every re-keyed loan, in row order (the first {MAX_LISTED_REKEYED:,} if there are more;"
        " the loans table has them all: `source_loan_id <> loan_id`).",
    )
    rekeyed_not_shown: int = Field(default=0, description="Re-keyed loans beyond those listed.")


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
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEYS[self.kind]})
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


class LoanLoader(_Loader):
    kind = "loans"
    copy_table = "ingest_batch"
    columns = ("row_number", "customer_id", "source_loan_id", *_LOAN_VALUES.split(", "))
    ddl = (
        # One batch as read; truncated after each.
        f"CREATE TEMP TABLE ingest_batch (row_number integer NOT NULL, {_LOAN_COLUMNS_DDL}) ON COMMIT DROP",
        # Batches read before the customers file committed.
        f"CREATE TEMP TABLE ingest_held (row_number integer NOT NULL, {_LOAN_COLUMNS_DDL}) ON COMMIT DROP",
        # Rows the batch insert could not place (their key is taken, or their Loan ID, or they repeat a key):
        # settled when the file ends. A few percent of a first load; everything on a reload.
        f"CREATE TEMP TABLE ingest_leftover (row_number integer NOT NULL, {_LOAN_COLUMNS_DDL})"
        " ON COMMIT DROP",
        # Every row's key, to list the rows a later one superseded.
        """
        CREATE TEMP TABLE ingest_rows (
            row_number integer NOT NULL, customer_id bigint NOT NULL, source_loan_id bigint NOT NULL
        ) ON COMMIT DROP
        """,
    )

    def __init__(
        self, path: str | Path, header: SheetHeader, *, customers_loaded: asyncio.Event | None = None
    ) -> None:
        super().__init__(path, header)
        self.inserted = 0
        self.max_loan_id = 0
        self.customers_loaded = customers_loaded
        self.held = 0  # rows waiting in ingest_held for the customers file to commit
        self.sequence_floor = 0

    async def start(self, conn: AsyncConnection) -> None:
        await super().start(conn)
        # The merge's NOT IN lookups are hashed only if the hash fits in work_mem; a held-back backlog
        # can be a few hundred thousand rows.
        await conn.execute(text("SET LOCAL work_mem = '64MB'"))

    async def _stage(self, info: BatchInfo, csv_rows: bytes) -> None:
        self.max_loan_id = max(self.max_loan_id, info.max_loan_id)
        if self.customers_loaded is not None and not self.customers_loaded.is_set():
            # Not yet: new customers of this job are not committed. Keep the rows in PostgreSQL, so the
            # reader never has to wait for the customers file.
            await self._copy("ingest_held", csv_rows)
            self.held += info.rows
            return
        await self._release_held()
        await self._copy(self.copy_table, csv_rows)
        await self._merge_batch()

    async def _release_held(self) -> None:
        if self.held:
            await self.conn.execute(text("INSERT INTO ingest_batch SELECT * FROM ingest_held"))
            await self.conn.execute(text("TRUNCATE ingest_held"))
            self.held = 0
            await self._merge_batch()

    async def _merge_batch(self) -> None:
        """Insert the batch's new loans under their workbook Loan ID; set the rest aside for `finish`.

        This is most of the work of a first load, and it runs while the reader parses the next batch.
        """
        if self.max_loan_id > self.sequence_floor:
            # Past every Loan ID seen so far, before claiming any: a loan created through the API meanwhile
            # (nextval) cannot take one of them.
            await _advance_sequence(self.conn, "loans", "loan_id", self.max_loan_id)
            self.sequence_floor = self.max_loan_id
        await self._drop_unknown_customers()
        inserted = await self._one(
            f"""
            WITH firsts AS MATERIALIZED (  -- a key's first row in the batch claims; later ones wait
                SELECT DISTINCT ON (customer_id, source_loan_id) * FROM ingest_batch
                ORDER BY customer_id, source_loan_id, row_number
            ),
            inserted AS (
                -- In file order, so the first of several loans with one Loan ID gets it. DO NOTHING when
                -- the key exists already or the Loan ID is taken (also by a concurrent transaction).
                INSERT INTO loans (loan_id, customer_id, source_loan_id, {_LOAN_VALUES})
                SELECT source_loan_id, customer_id, source_loan_id, {_LOAN_VALUES}
                FROM firsts ORDER BY row_number
                ON CONFLICT DO NOTHING
                RETURNING customer_id, source_loan_id
            ),
            set_aside AS (
                -- NOT IN over a subquery: a hash lookup per row whatever the planner thinks of the CTEs.
                INSERT INTO ingest_leftover
                SELECT * FROM ingest_batch b
                WHERE (b.customer_id, b.source_loan_id)
                      NOT IN (SELECT customer_id, source_loan_id FROM inserted)
                   OR b.row_number NOT IN (SELECT row_number FROM firsts)
            ),
            remembered AS (
                INSERT INTO ingest_rows SELECT row_number, customer_id, source_loan_id FROM ingest_batch
            )
            SELECT count(*) FROM inserted
            """
        )
        self.inserted += int(inserted[0])
        await self.conn.execute(text("TRUNCATE ingest_batch"))

    async def _drop_unknown_customers(self) -> None:
        rows = await self._rows(
            """
            DELETE FROM ingest_batch b
            -- A scalar subquery: one index probe per row (NOT EXISTS may hash the whole table per batch).
            WHERE (SELECT 1 FROM customers c WHERE c.customer_id = b.customer_id) IS NULL
            RETURNING row_number, customer_id
            """
        )
        self._reject(sorted(rows), "customer_id", lambda r: f"unknown customer {r.customer_id}")

    async def finish(self) -> FileReport:
        """Settle the rows set aside: the last row of each key wins; a key already in the table is updated
        (only if its values differ); a new loan whose Loan ID was taken is inserted under a fresh id."""
        if self.customers_loaded is not None:
            await self.customers_loaded.wait()  # a small loans file can be read before customers commit
        await self._release_held()
        await self.conn.execute(
            text(
                """
                CREATE TEMP TABLE ingest_final ON COMMIT DROP AS
                SELECT DISTINCT ON (l.customer_id, l.source_loan_id) l.*,
                       min(l.row_number) OVER (PARTITION BY l.customer_id, l.source_loan_id) AS first_row,
                       t.loan_id AS target_loan_id,
                       -- Inserted by this very transaction (an earlier batch of this file), or there before?
                       t.xmin = pg_current_xact_id()::xid AS from_this_file
                FROM ingest_leftover l
                LEFT JOIN loans t USING (customer_id, source_loan_id)
                ORDER BY l.customer_id, l.source_loan_id, l.row_number DESC
                """
            )
        )
        await self._list_superseded()
        updated, preexisting = await self._update_existing()
        self.inserted += await self._insert_deferred()
        rekeyed, listed = await self._rekeyed()
        await advance_identity_sequences(self.conn)
        return self._report(
            inserted=self.inserted,
            updated=updated,
            unchanged=preexisting - updated,
            rekeyed=rekeyed,
            rekeyed_loans=listed,
            rekeyed_not_shown=rekeyed - len(listed),
        )

    async def _list_superseded(self) -> None:
        """Rows of a key that a later row of the same key replaced (only keys with rows set aside can
        have any: a repeated key's later rows always are)."""
        self._superseded(
            await self._rows(
                """
                SELECT row_number, kept_row, customer_id, source_loan_id AS loan_id FROM (
                    SELECT r.*, lead(r.row_number) OVER (PARTITION BY r.customer_id, r.source_loan_id
                                                        ORDER BY r.row_number) AS kept_row
                    FROM ingest_rows r
                    WHERE (r.customer_id, r.source_loan_id)
                          IN (SELECT customer_id, source_loan_id FROM ingest_final)
                ) keyed
                WHERE kept_row IS NOT NULL
                ORDER BY row_number
                """
            )
        )

    async def _update_existing(self) -> tuple[int, int]:
        """Apply the last row to keys in the table whose values differ. Returns (updated, pre-existing):
        rows there before this file count as updated or unchanged; a duplicate within the file does not."""
        updated, preexisting = await self._one(
            f"""
            WITH changed AS (
                UPDATE loans t SET ({_LOAN_VALUES}) = ({_prefixed("f")})
                FROM ingest_final f
                WHERE t.loan_id = f.target_loan_id
                  AND ({_prefixed("t")}) IS DISTINCT FROM ({_prefixed("f")})
                RETURNING f.from_this_file
            )
            SELECT (SELECT count(*) FROM changed WHERE NOT from_this_file),
                   (SELECT count(*) FROM ingest_final WHERE target_loan_id IS NOT NULL AND NOT from_this_file)
            """
        )
        return int(updated), int(preexisting)

    async def _insert_deferred(self) -> int:
        """Fresh ids, in file order, for new loans whose Loan ID was taken. The sequence is already past
        every Loan ID of the file (advanced batch by batch), so no fresh id equals one of them."""
        inserted = await self.conn.execute(
            text(
                f"""
                INSERT INTO loans (loan_id, customer_id, source_loan_id, {_LOAN_VALUES})
                SELECT nextval(pg_get_serial_sequence('loans', 'loan_id')), customer_id, source_loan_id,
                       {_LOAN_VALUES}
                FROM (
                    SELECT * FROM ingest_final WHERE target_loan_id IS NULL ORDER BY first_row
                ) in_file_order
                """
            )
        )
        return int(inserted.rowcount)

    async def _rekeyed(self) -> tuple[int, list[RekeyedLoan]]:
        """How many loans of the file are stored under another id than their Loan ID (those just given a
        fresh one, and those an earlier load did), and the first MAX_LISTED_REKEYED of them, in row order.
        Only keys set aside can be: a loan the batch insert placed has loan_id = its Loan ID."""
        rekeyed = """
            FROM ingest_final f
            JOIN loans t USING (customer_id, source_loan_id)
            WHERE t.loan_id <> t.source_loan_id
        """
        count = (await self._one(f"SELECT count(*) {rekeyed}"))[0]
        rows = await self._rows(
            f"""
            SELECT f.row_number, f.customer_id, f.source_loan_id, t.loan_id,
                   (SELECT h.customer_id FROM loans h WHERE h.loan_id = f.source_loan_id) AS holder
            {rekeyed}
            ORDER BY f.row_number
            LIMIT :limit
            """,
            limit=MAX_LISTED_REKEYED,
        )
        return int(count), [
            RekeyedLoan(
                row=r.row_number,
                customer_id=r.customer_id,
                workbook_loan_id=r.source_loan_id,
                loan_id=r.loan_id,
                held_by_customer_id=r.holder,
            )
            for r in rows
        ]


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in _LOAN_VALUES.split(", "))
