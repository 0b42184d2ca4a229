"""Batches of validated rows -> COPY into TEMP staging tables -> merged into the real tables.

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

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.import_locks import INGESTION_LOCK_KEYS, FileKind
from app.ingestion.rows import MAX_REPORTED_ERRORS, RowError
from app.ingestion.sheet import SheetHeader

MAX_LISTED = MAX_REPORTED_ERRORS
"""Superseded rows, phone conflicts and re-keyed rows listed in a report: the first 100 in row order.
The rest are counted in SQL and never brought into the worker, so its memory does not grow with them."""


class RowIssue(BaseModel):
    sheet: str = Field(description="Worksheet the row is on.")
    row: int = Field(description="Row number as Excel shows it (the header is usually row 1).")
    column: str = Field(description="Column header as written in the file.")
    reason: str = Field(description="Why the row was skipped.")
    value: str | None = Field(default=None, description="The offending value, as text (null when empty).")


class DuplicateRow(BaseModel):
    row: int = Field(description="Row that was superseded.")
    kept_row: int = Field(description="Later row with the same key that replaced it (last row wins).")
    customer_id: int = Field(
        description="The row's customer: its workbook Customer ID in a customers file, the customer_id "
        "it is stored under in a loans file."
    )
    loan_id: int | None = Field(default=None, description="Workbook Loan ID (loans file only).")


class RekeyedCustomer(BaseModel):
    row: int = Field(description="Row of the customer in the customers workbook.")
    workbook_customer_id: int = Field(description="Customer ID in the workbook, kept as source_customer_id.")
    customer_id: int = Field(description="customer_id the customer is stored under.")
    held_by_customer_id: int | None = Field(
        default=None,
        description="The customer (registered through the API, or not created by an import) that holds "
        "the workbook Customer ID as its customer_id.",
    )


class RekeyedLoan(BaseModel):
    row: int = Field(description="Row of the loan in the loans workbook.")
    customer_id: int = Field(description="Customer the loan belongs to.")
    workbook_loan_id: int = Field(description="Loan ID in the workbook, kept as source_loan_id.")
    loan_id: int = Field(description="loan_id the loan is stored under.")
    held_by_customer_id: int | None = Field(
        default=None, description="Customer whose loan holds the workbook Loan ID as its loan_id."
    )


class ServicedLoan(BaseModel):
    row: int = Field(description="Row of the loan in the loans workbook.")
    customer_id: int = Field(description="Customer the loan belongs to.")
    workbook_loan_id: int = Field(description="Loan ID in the workbook (source_loan_id).")
    loan_id: int = Field(description="The stored loan, left as it is.")


class FileReport(BaseModel):
    file: FileKind = Field(description="Which workbook: `customers` or `loans`.")
    path: str = Field(description="The workbook's path, as the worker read it.")
    sheet: str = Field(description="The worksheet that was loaded (the first visible one).")
    rows_read: int = Field(description="Non-empty data rows read.")
    inserted: int = Field(description="Rows added to the table.")
    updated: int = Field(description="Existing rows whose values changed.")
    unchanged: int = Field(description="Existing rows the file repeats exactly (nothing written).")
    skipped: int = Field(description="Bad rows not loaded; see `errors`.")
    duplicates: int = Field(description="Rows superseded by a later row with the same key (last row wins).")
    rekeyed: int = Field(
        description="Rows stored under another id than their workbook key: customers whose Customer ID "
        "a registered customer holds, loans whose Loan ID another loan holds."
    )
    adopted: int = Field(
        default=0,
        description="Customers from before source ids were kept (migration 0003) that this file claimed: "
        "same customer_id and same phone number as the workbook row.",
    )
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
        default_factory=list, description=f"The first {MAX_LISTED} superseded rows, in row order."
    )
    duplicates_not_shown: int = Field(default=0, description="Superseded rows beyond those listed.")
    rekeyed_customers: list[RekeyedCustomer] = Field(
        default_factory=list,
        description=f"The first {MAX_LISTED} re-keyed customers, in row order (the customers table has "
        "them all: `source_customer_id <> customer_id`).",
    )
    rekeyed_loans: list[RekeyedLoan] = Field(
        default_factory=list,
        description=f"The first {MAX_LISTED} re-keyed loans, in row order (the loans table has them all: "
        "`source_loan_id <> loan_id`).",
    )
    rekeyed_not_shown: int = Field(default=0, description="Re-keyed rows beyond those listed.")
    serviced_here: int = Field(
        default=0,
        description="Loans of the file that already have payments made through the API: the service keeps "
        "their ledger, so the import leaves them exactly as they are (counted whether or not the workbook "
        "row differs).",
    )
    serviced_here_loans: list[ServicedLoan] = Field(
        default_factory=list, description=f"The first {MAX_LISTED} serviced-here loans, in row order."
    )
    serviced_here_not_shown: int = Field(default=0, description="Serviced-here loans beyond those listed.")


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


def _total(rows: list[Any]) -> int:
    """The count a listing query carries on each row (`count(*) OVER ()`): all the rows, listed or not."""
    return int(rows[0].total) if rows else 0


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
        self.duplicates += _total(rows)
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


_CUSTOMER_VALUES = "first_name, last_name, age, phone_number, monthly_salary, approved_limit"


def _prefixed(alias: str, values: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in values.split(", "))


class CustomerLoader(_Loader):
    """Customers are keyed by their workbook Customer ID, kept in `source_customer_id`.

    A row updates only the customer an earlier import created under its Customer ID. A new customer
    keeps the Customer ID as its customer_id when that id is free; when a customer the import did not
    create holds it (one registered through the API), the new customer gets a fresh id and the report
    lists it. Exception for databases upgraded from before source ids (migration 0003): a customer of
    unknown origin holding the id is adopted, and updated, only when its phone number matches the row's.
    """

    kind = "customers"
    copy_table = "ingest_customers"
    columns = (
        "row_number",
        "source_customer_id",
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
            source_customer_id bigint NOT NULL,
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
        # Past every Customer ID of the file first: from here on a registration through the API (nextval)
        # cannot take one of them, and the fresh ids drawn below cannot either.
        max_id = (await self._one("SELECT max(source_customer_id) FROM ingest_customers"))[0] or 0
        await _advance_sequence(self.conn, "customers", "customer_id", max_id)
        # Last row wins for a Customer ID repeated in the file; each row's target, if it has one: the
        # customer an earlier import created under the id, else a customer of unknown origin (from before
        # migration 0003) holding the id with the same phone number.
        await self.conn.execute(
            text(
                """
                CREATE TEMP TABLE ingest_customers_final ON COMMIT DROP AS
                SELECT f.*, coalesce(mine.customer_id, legacy.customer_id) AS target_customer_id,
                       mine.customer_id IS NULL AND legacy.customer_id IS NOT NULL AS adopt
                FROM (
                    SELECT DISTINCT ON (source_customer_id) * FROM ingest_customers
                    ORDER BY source_customer_id, row_number DESC
                ) f
                LEFT JOIN customers mine ON mine.source_customer_id = f.source_customer_id
                LEFT JOIN customers legacy
                       ON legacy.customer_id = f.source_customer_id AND legacy.source_customer_id IS NULL
                      AND legacy.origin_unknown AND legacy.phone_number = f.phone_number
                """
            )
        )
        self._superseded(
            await self._rows(
                """
                SELECT s.row_number, f.row_number AS kept_row, s.source_customer_id AS customer_id,
                       NULL::bigint AS loan_id, count(*) OVER () AS total
                FROM ingest_customers s JOIN ingest_customers_final f USING (source_customer_id)
                WHERE s.row_number <> f.row_number
                ORDER BY s.row_number LIMIT :limit
                """,
                limit=MAX_LISTED,
            )
        )
        await self._drop_phone_conflicts()
        updated, existing, adopted = await self._update_existing()
        inserted = await self._insert_new()
        rekeyed, listed = await self._rekeyed()
        await advance_identity_sequences(self.conn)
        return self._report(
            inserted=inserted,
            updated=updated,
            unchanged=existing - updated,
            rekeyed=rekeyed,
            adopted=adopted,
            rekeyed_customers=listed,
            rekeyed_not_shown=rekeyed - len(listed),
        )

    async def _drop_phone_conflicts(self) -> None:
        """Phone numbers are unique: skip a row whose phone another customer holds, in the table or on an
        earlier row of the file, rather than fail the whole file on the unique constraint."""
        rows = await self._rows(
            """
            WITH held AS (
                SELECT f.row_number, f.phone_number, c.customer_id AS holder, NULL::integer AS holder_row
                FROM ingest_customers_final f
                JOIN customers c ON c.phone_number = f.phone_number
                WHERE c.customer_id IS DISTINCT FROM f.target_customer_id
                UNION ALL
                SELECT row_number, phone_number, first_customer, first_row
                FROM (
                    SELECT row_number, phone_number,
                           first_value(row_number) OVER w AS first_row,
                           first_value(source_customer_id) OVER w AS first_customer
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
            SELECT *, count(*) OVER () AS total FROM conflicts ORDER BY row_number LIMIT :limit
            """,
            limit=max(self._room(), 1),  # one row at least, to read the total
        )

        def reason(r: Any) -> str:
            where = f"on row {r.holder_row}" if r.holder_row else "already in the database"
            return f"phone number {r.phone_number} belongs to customer {r.holder} ({where})"

        self._reject(rows[: self._room()], "phone_number", reason, total=_total(rows))

    async def _update_existing(self) -> tuple[int, int, int]:
        """Write the rows whose customer exists (only where values differ, or to adopt a customer of
        unknown origin). Returns (updated, existing, adopted)."""
        updated, existing, adopted = await self._one(
            f"""
            WITH targets AS (
                SELECT f.*, ({_prefixed("c", _CUSTOMER_VALUES)}) IS DISTINCT FROM
                            ({_prefixed("f", _CUSTOMER_VALUES)}) AS changed
                FROM ingest_customers_final f JOIN customers c ON c.customer_id = f.target_customer_id
            ),
            written AS (
                UPDATE customers c
                SET ({_CUSTOMER_VALUES}, source_customer_id, origin_unknown)
                    = ({_prefixed("t", _CUSTOMER_VALUES)}, t.source_customer_id, false)
                FROM targets t
                WHERE c.customer_id = t.target_customer_id AND (t.changed OR t.adopt)
                RETURNING t.changed
            )
            SELECT (SELECT count(*) FROM written WHERE changed), (SELECT count(*) FROM targets),
                   (SELECT count(*) FROM targets WHERE adopt)
            """
        )
        return int(updated), int(existing), int(adopted)

    async def _insert_new(self) -> int:
        """New customers, in file order: under their Customer ID where it is free, else a fresh id."""
        new = "FROM ingest_customers_final f WHERE target_customer_id IS NULL"
        free = await self._one(
            f"""
            WITH written AS (
                INSERT INTO customers (customer_id, source_customer_id, {_CUSTOMER_VALUES})
                SELECT source_customer_id, source_customer_id, {_CUSTOMER_VALUES}
                {new} ORDER BY row_number
                -- Taken (by a registered customer, also one committing right now): re-keyed below.
                ON CONFLICT (customer_id) DO NOTHING
                RETURNING 1
            )
            SELECT count(*) FROM written
            """
        )
        fresh = await self.conn.execute(
            text(
                f"""
                INSERT INTO customers (customer_id, source_customer_id, {_CUSTOMER_VALUES})
                SELECT nextval(pg_get_serial_sequence('customers', 'customer_id')), source_customer_id,
                       {_CUSTOMER_VALUES}
                FROM (
                    SELECT * {new}
                      AND NOT EXISTS (
                          SELECT 1 FROM customers c WHERE c.source_customer_id = f.source_customer_id
                      )
                    ORDER BY row_number
                ) in_file_order
                """
            )
        )
        return int(free[0]) + int(fresh.rowcount)

    async def _rekeyed(self) -> tuple[int, list[RekeyedCustomer]]:
        """Customers of the file stored under another id than their Customer ID (now or by an earlier
        import): how many, and the first MAX_LISTED in row order."""
        rows = await self._rows(
            """
            SELECT f.row_number, f.source_customer_id, c.customer_id, h.customer_id AS holder,
                   count(*) OVER () AS total
            FROM ingest_customers_final f
            JOIN customers c ON c.source_customer_id = f.source_customer_id
            LEFT JOIN customers h ON h.customer_id = f.source_customer_id
            WHERE c.customer_id <> c.source_customer_id
            ORDER BY f.row_number LIMIT :limit
            """,
            limit=MAX_LISTED,
        )
        listed = [
            RekeyedCustomer(
                row=r.row_number,
                workbook_customer_id=r.source_customer_id,
                customer_id=r.customer_id,
                held_by_customer_id=r.holder,
            )
            for r in rows
        ]
        return _total(rows), listed


# The workbook's columns, then the servicing state the reader computed from them (issue #11: the first
# EMIs-paid installments amortised with the formula's EMI). A changed row changes both; a loan with payments
# through the API is never changed (see _update_existing).
_LOAN_VALUES = (
    "loan_amount, tenure, interest_rate, monthly_installment, emis_paid_on_time, start_date, end_date, "
    "outstanding_principal, installments_paid, amount_paid, repayments_left, paid_off_on"
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
    end_date date NOT NULL,
    outstanding_principal numeric(14, 2) NOT NULL,
    installments_paid integer NOT NULL,
    amount_paid numeric(18, 2) NOT NULL,
    repayments_left integer NOT NULL,
    paid_off_on date
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
        """Map each row's workbook Customer ID to the customer an import created under it; a row whose
        Customer ID no import created is skipped (loans never attach to a customer registered through the
        API, whatever its id)."""
        rows = await self._rows(
            """
            WITH gone AS (
                DELETE FROM ingest_batch b
                -- A scalar subquery: one index probe per row (NOT EXISTS may hash the whole table).
                WHERE (SELECT 1 FROM customers c WHERE c.source_customer_id = b.customer_id) IS NULL
                RETURNING row_number, customer_id
            )
            SELECT *, (SELECT count(*) FROM gone) AS total FROM gone ORDER BY row_number LIMIT :limit
            """,
            limit=max(self._room(), 1),  # one row at least, to read the total
        )
        self._reject(
            rows[: self._room()],
            "customer_id",
            lambda r: f"unknown customer {r.customer_id}",
            total=_total(rows),
        )
        # Only re-keyed customers are stored under another id: the partial index holds just those.
        await self.conn.execute(
            text(
                """
                UPDATE ingest_batch b SET customer_id = c.customer_id
                FROM customers c
                WHERE c.source_customer_id = b.customer_id AND c.customer_id <> c.source_customer_id
                """
            )
        )

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
        serviced, serviced_listed = await self._serviced_here()
        updated, preexisting = await self._update_existing()
        self.inserted += await self._insert_deferred()
        rekeyed, listed = await self._rekeyed()
        await advance_identity_sequences(self.conn)
        return self._report(
            inserted=self.inserted,
            updated=updated,
            unchanged=preexisting - updated - serviced,
            rekeyed=rekeyed,
            rekeyed_loans=listed,
            rekeyed_not_shown=rekeyed - len(listed),
            serviced_here=serviced,
            serviced_here_loans=serviced_listed,
            serviced_here_not_shown=serviced - len(serviced_listed),
        )

    async def _serviced_here(self) -> tuple[int, list[ServicedLoan]]:
        """Loans of the file that were there before it and have payments through the API (last_paid_on
        set): their servicing is the service's own ledger now, so the import leaves them alone."""
        rows = await self._rows(
            """
            SELECT f.row_number, f.customer_id, f.source_loan_id, t.loan_id, count(*) OVER () AS total
            FROM ingest_final f
            JOIN loans t ON t.loan_id = f.target_loan_id
            WHERE t.last_paid_on IS NOT NULL AND NOT f.from_this_file
            ORDER BY f.row_number
            LIMIT :limit
            """,
            limit=MAX_LISTED,
        )
        listed = [
            ServicedLoan(
                row=r.row_number,
                customer_id=r.customer_id,
                workbook_loan_id=r.source_loan_id,
                loan_id=r.loan_id,
            )
            for r in rows
        ]
        return _total(rows), listed

    async def _list_superseded(self) -> None:
        """Rows of a key that a later row of the same key replaced (only keys with rows set aside can
        have any: a repeated key's later rows always are)."""
        self._superseded(
            await self._rows(
                """
                SELECT row_number, kept_row, customer_id, source_loan_id AS loan_id,
                       count(*) OVER () AS total
                FROM (
                    SELECT r.*, lead(r.row_number) OVER (PARTITION BY r.customer_id, r.source_loan_id
                                                        ORDER BY r.row_number) AS kept_row
                    FROM ingest_rows r
                    WHERE (r.customer_id, r.source_loan_id)
                          IN (SELECT customer_id, source_loan_id FROM ingest_final)
                ) keyed
                WHERE kept_row IS NOT NULL
                ORDER BY row_number LIMIT :limit
                """,
                limit=MAX_LISTED,
            )
        )

    async def _update_existing(self) -> tuple[int, int]:
        """Apply the last row to keys in the table whose values differ. Returns (updated, pre-existing):
        rows there before this file count as updated or unchanged; a duplicate within the file does not."""
        updated, preexisting = await self._one(
            f"""
            WITH changed AS (
                UPDATE loans t SET ({_LOAN_VALUES}) = ({_prefixed("f", _LOAN_VALUES)})
                FROM ingest_final f
                WHERE t.loan_id = f.target_loan_id
                  AND t.last_paid_on IS NULL  -- serviced here: the API's payments are the ledger
                  AND ({_prefixed("t", _LOAN_VALUES)}) IS DISTINCT FROM ({_prefixed("f", _LOAN_VALUES)})
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
        fresh one, and those an earlier load did), and the first MAX_LISTED of them, in row order.
        Only keys set aside can be: a loan the batch insert placed has loan_id = its Loan ID."""
        rows = await self._rows(
            """
            SELECT f.row_number, f.customer_id, f.source_loan_id, t.loan_id,
                   (SELECT h.customer_id FROM loans h WHERE h.loan_id = f.source_loan_id) AS holder,
                   count(*) OVER () AS total
            FROM ingest_final f
            JOIN loans t USING (customer_id, source_loan_id)
            WHERE t.loan_id <> t.source_loan_id
            ORDER BY f.row_number
            LIMIT :limit
            """,
            limit=MAX_LISTED,
        )
        listed = [
            RekeyedLoan(
                row=r.row_number,
                customer_id=r.customer_id,
                workbook_loan_id=r.source_loan_id,
                loan_id=r.loan_id,
                held_by_customer_id=r.holder,
            )
            for r in rows
        ]
        return _total(rows), listed
