"""Batches of validated rows -> COPY into a TEMP staging table -> one merge into the real table.

Everything for one file runs inside the caller's transaction, so a file loads completely or not at all,
and the identity sequences are moved past the largest id before it commits. Merges are written so that
running the same file again changes nothing: updates only touch rows whose values differ.

Loan IDs: a loan keeps its workbook Loan ID as its loan_id unless that id is already taken (by a row
already in the table, or by an earlier row of the same file); then it gets a fresh id from the identity
sequence and keeps the workbook's number in source_loan_id. A loan already loaded (same customer, same
source_loan_id) is updated in place and keeps whatever loan_id it has.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.ingestion.reader import MAX_REPORTED_ERRORS, Batch, RowError, SheetHeader

# Serialises ingestions (two workers, or ARQ running a job twice): one file merges at a time.
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
    kept_row: int = Field(
        description="Later row with the same key, which was loaded instead (last row wins)."
    )
    customer_id: int
    loan_id: int | None = Field(default=None, description="Workbook Loan ID (loans file only).")


class RekeyedLoan(BaseModel):
    row: int = Field(description="Row of the loan in the loans workbook.")
    customer_id: int
    workbook_loan_id: int = Field(description="Loan ID in the workbook, kept as source_loan_id.")
    loan_id: int = Field(description="loan_id the loan is stored under.")
    held_by_customer_id: int | None = Field(
        default=None, description="Customer whose loan holds the workbook Loan ID as its loan_id."
    )


class FileReport(BaseModel):
    file: FileKind
    path: str
    sheet: str
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


Executor = AsyncConnection | AsyncSession


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
                    :at_least
                ) AS value
            )
            SELECT setval((SELECT id FROM seq), GREATEST(value, 1), value >= 1) FROM top
            """
        ),
        {"at_least": at_least},
    )


class _Loader:
    """Stages batches with COPY, then merges; one instance per file, inside one transaction."""

    kind: ClassVar[FileKind]
    staging: ClassVar[str]
    staging_ddl: ClassVar[str]
    columns: ClassVar[Sequence[str]]

    def __init__(self, conn: AsyncConnection, path: str, header: SheetHeader) -> None:
        self.conn = conn
        self.path = path
        self.header = header
        self.started = time.perf_counter()
        self.rows_read = self.skipped = self.error_count = 0
        self.errors: list[RowError] = []
        self._driver: Any = None

    async def start(self) -> None:
        await self.conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INGESTION_LOCK_KEY})
        await self.conn.execute(text(self.staging_ddl))
        raw = await self.conn.get_raw_connection()
        self._driver = raw.driver_connection  # asyncpg: COPY is not part of the DB-API

    async def stage(self, batch: Batch) -> None:
        self.rows_read = batch.rows_read
        self.skipped += batch.skipped
        self.error_count += batch.error_count
        self.errors.extend(batch.errors)
        if batch.rows:
            await self._driver.copy_records_to_table(self.staging, records=batch.rows, columns=self.columns)

    async def finish(self) -> FileReport:
        """Merge the staged rows, advance the sequences, and say what happened."""
        raise NotImplementedError

    async def _rows(self, sql: str, **params: Any) -> list[Any]:
        return list((await self.conn.execute(text(sql), params)).all())

    async def _scalar(self, sql: str, **params: Any) -> Any:
        return (await self.conn.execute(text(sql), params)).scalar_one()

    def _reject(self, rows: list[Any], total: int, column: str, reason: Any) -> None:
        """Record rows the database side rejected (first MAX_REPORTED_ERRORS given; `total` of them)."""
        self.skipped += total
        self.error_count += total
        self.errors.extend(RowError(self.header.sheet, r.row_number, column, reason(r), None) for r in rows)

    def _report(self, **counts: Any) -> FileReport:
        errors = sorted(self.errors, key=lambda e: (e.row, e.column))[:MAX_REPORTED_ERRORS]
        return FileReport(
            file=self.kind,
            path=self.path,
            sheet=self.header.sheet,
            rows_read=self.rows_read,
            skipped=self.skipped,
            seconds=round(time.perf_counter() - self.started, 3),
            ignored_columns=self.header.ignored,
            derived_columns=self.header.derived,
            errors=[RowIssue(**e._asdict()) for e in errors],
            errors_not_shown=self.error_count - len(errors),
            **counts,
        )

    def _header_of(self, field: str) -> str:
        return next(c.header for c in self.header.columns if c.field.name == field)

    async def _duplicates(self, key: str, final: str) -> tuple[int, list[DuplicateRow]]:
        """Rows superseded by a later row with the same key: staged minus kept, and the first few."""
        total = await self._scalar(
            f"SELECT (SELECT count(*) FROM {self.staging}) - (SELECT count(*) FROM {final})"
        )
        if not total:
            return 0, []
        loan = "s.source_loan_id" if "source_loan_id" in key else "NULL::bigint"
        rows = await self._rows(
            f"""
            SELECT s.row_number, f.row_number AS kept_row, s.customer_id, {loan} AS loan_id
            FROM {self.staging} s JOIN {final} f USING ({key})
            WHERE s.row_number <> f.row_number ORDER BY s.row_number LIMIT :limit
            """,
            limit=MAX_REPORTED_ERRORS,
        )
        return total, [
            DuplicateRow(row=r.row_number, kept_row=r.kept_row, customer_id=r.customer_id, loan_id=r.loan_id)
            for r in rows
        ]


class CustomerLoader(_Loader):
    kind = "customers"
    staging = "ingest_customers"
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
    staging_ddl = """
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
    """

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
        duplicates, duplicate_rows = await self._duplicates("customer_id", "ingest_customers_final")
        await self._drop_phone_conflicts()
        inserted, updated = (
            await self.conn.execute(
                text(
                    """
                    WITH written AS (
                        INSERT INTO customers AS c (customer_id, first_name, last_name, age, phone_number,
                                                    monthly_salary, approved_limit)
                        SELECT customer_id, first_name, last_name, age, phone_number, monthly_salary,
                               approved_limit
                        FROM ingest_customers_final
                        ON CONFLICT (customer_id) DO UPDATE SET
                            first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
                            age = EXCLUDED.age, phone_number = EXCLUDED.phone_number,
                            monthly_salary = EXCLUDED.monthly_salary, approved_limit = EXCLUDED.approved_limit
                        -- A row the file repeats exactly is not rewritten: a second run changes nothing.
                        WHERE (c.first_name, c.last_name, c.age, c.phone_number, c.monthly_salary,
                               c.approved_limit)
                              IS DISTINCT FROM (EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.age,
                                                EXCLUDED.phone_number, EXCLUDED.monthly_salary,
                                                EXCLUDED.approved_limit)
                        RETURNING xmax = 0 AS inserted
                    )
                    SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
                    """
                )
            )
        ).one()
        kept = await self._scalar("SELECT count(*) FROM ingest_customers_final")
        await advance_identity_sequences(self.conn)
        return self._report(
            inserted=inserted,
            updated=updated,
            unchanged=kept - inserted - updated,
            duplicates=duplicates,
            duplicate_rows=duplicate_rows,
            rekeyed=0,
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
                RETURNING f.row_number
            )
            SELECT (SELECT count(*) FROM dropped) AS total, c.*
            FROM conflicts c ORDER BY c.row_number LIMIT :limit
            """,
            limit=MAX_REPORTED_ERRORS,
        )
        if rows:

            def reason(r: Any) -> str:
                where = f"row {r.holder_row}" if r.holder_row else "an existing customer"
                return f"phone number {r.phone_number} already belongs to customer {r.holder} ({where})"

            self._reject(rows, rows[0].total, self._header_of("phone_number"), reason)


class LoanLoader(_Loader):
    kind = "loans"
    staging = "ingest_loans"
    columns = (
        "row_number",
        "customer_id",
        "source_loan_id",
        "loan_amount",
        "tenure",
        "interest_rate",
        "monthly_installment",
        "emis_paid_on_time",
        "start_date",
        "end_date",
    )
    staging_ddl = """
        CREATE TEMP TABLE ingest_loans (
            row_number integer NOT NULL,
            customer_id bigint NOT NULL,
            source_loan_id bigint NOT NULL,
            loan_amount numeric(14, 2) NOT NULL,
            tenure integer NOT NULL,
            interest_rate numeric(5, 2) NOT NULL,
            monthly_installment numeric(14, 2) NOT NULL,
            emis_paid_on_time integer NOT NULL,
            start_date date NOT NULL,
            end_date date NOT NULL
        ) ON COMMIT DROP
    """

    async def finish(self) -> FileReport:
        await self._drop_unknown_customers()
        # Move the sequence past every workbook Loan ID first: from here on, a loan created through the
        # API (nextval) cannot take an id this file is about to claim.
        max_source = await self._scalar("SELECT COALESCE(max(source_loan_id), 0) FROM ingest_loans")
        await _advance_sequence(self.conn, "loans", "loan_id", max_source)
        await self._assign_loan_ids()
        duplicates, duplicate_rows = await self._duplicates(
            "customer_id, source_loan_id", "ingest_loans_final"
        )
        inserted, updated = (
            await self.conn.execute(
                text(
                    """
                    WITH written AS (
                        INSERT INTO loans AS l (loan_id, customer_id, source_loan_id, loan_amount, tenure,
                                                interest_rate, monthly_installment, emis_paid_on_time,
                                                start_date, end_date)
                        SELECT loan_id, customer_id, source_loan_id, loan_amount, tenure, interest_rate,
                               monthly_installment, emis_paid_on_time, start_date, end_date
                        FROM ingest_loans_final
                        ON CONFLICT (customer_id, source_loan_id) DO UPDATE SET
                            loan_amount = EXCLUDED.loan_amount, tenure = EXCLUDED.tenure,
                            interest_rate = EXCLUDED.interest_rate,
                            monthly_installment = EXCLUDED.monthly_installment,
                            emis_paid_on_time = EXCLUDED.emis_paid_on_time,
                            start_date = EXCLUDED.start_date, end_date = EXCLUDED.end_date
                        WHERE (l.loan_amount, l.tenure, l.interest_rate, l.monthly_installment,
                               l.emis_paid_on_time, l.start_date, l.end_date)
                              IS DISTINCT FROM (EXCLUDED.loan_amount, EXCLUDED.tenure, EXCLUDED.interest_rate,
                                                EXCLUDED.monthly_installment, EXCLUDED.emis_paid_on_time,
                                                EXCLUDED.start_date, EXCLUDED.end_date)
                        RETURNING xmax = 0 AS inserted
                    )
                    SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
                    """
                )
            )
        ).one()
        kept = await self._scalar("SELECT count(*) FROM ingest_loans_final")
        rekeyed = await self._rekeyed()
        await advance_identity_sequences(self.conn)
        return self._report(
            inserted=inserted,
            updated=updated,
            unchanged=kept - inserted - updated,
            duplicates=duplicates,
            duplicate_rows=duplicate_rows,
            rekeyed=len(rekeyed),
            rekeyed_loans=rekeyed,
        )

    async def _drop_unknown_customers(self) -> None:
        rows = await self._rows(
            """
            WITH dropped AS (
                DELETE FROM ingest_loans s
                WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = s.customer_id)
                RETURNING row_number, customer_id
            )
            SELECT (SELECT count(*) FROM dropped) AS total, d.*
            FROM dropped d ORDER BY d.row_number LIMIT :limit
            """,
            limit=MAX_REPORTED_ERRORS,
        )
        if rows:
            self._reject(
                rows,
                rows[0].total,
                self._header_of("customer_id"),
                lambda r: f"unknown customer {r.customer_id}",
            )

    async def _assign_loan_ids(self) -> None:
        """Build the merge set: one row per (customer, Loan ID), the last in the file, with its loan_id.

        A loan already in the table keeps its loan_id. A new loan takes its workbook Loan ID when no row
        in the table holds that id and no earlier new loan of the file (by first appearance) claims it;
        otherwise it draws a fresh id from the sequence, in file order.
        """
        await self.conn.execute(
            text(
                """
                CREATE TEMP TABLE ingest_loans_final ON COMMIT DROP AS
                WITH last_rows AS (
                    SELECT DISTINCT ON (customer_id, source_loan_id) *,
                           min(row_number) OVER (PARTITION BY customer_id, source_loan_id) AS first_row
                    FROM ingest_loans
                    ORDER BY customer_id, source_loan_id, row_number DESC
                ),
                matched AS (
                    SELECT r.*, l.loan_id AS existing_loan_id,
                           row_number() OVER (PARTITION BY l.loan_id IS NULL, r.source_loan_id
                                              ORDER BY r.first_row) AS claim_rank
                    FROM last_rows r
                    LEFT JOIN loans l ON l.customer_id = r.customer_id AND l.source_loan_id = r.source_loan_id
                ),
                in_file_order AS (SELECT * FROM matched ORDER BY first_row)
                SELECT row_number, customer_id, source_loan_id, loan_amount, tenure, interest_rate,
                       monthly_installment, emis_paid_on_time, start_date, end_date, existing_loan_id,
                       CASE
                           WHEN existing_loan_id IS NOT NULL THEN existing_loan_id
                           WHEN claim_rank = 1
                                AND NOT EXISTS (SELECT 1 FROM loans x WHERE x.loan_id = m.source_loan_id)
                               THEN source_loan_id
                           ELSE nextval(pg_get_serial_sequence('loans', 'loan_id'))
                       END AS loan_id
                FROM in_file_order m
                """
            )
        )

    async def _rekeyed(self) -> list[RekeyedLoan]:
        rows = await self._rows(
            """
            SELECT f.row_number, f.customer_id, f.source_loan_id, f.loan_id, h.customer_id AS holder
            FROM ingest_loans_final f LEFT JOIN loans h ON h.loan_id = f.source_loan_id
            WHERE f.loan_id <> f.source_loan_id
            ORDER BY f.row_number
            """
        )
        return [
            RekeyedLoan(
                row=r.row_number,
                customer_id=r.customer_id,
                workbook_loan_id=r.source_loan_id,
                loan_id=r.loan_id,
                held_by_customer_id=r.holder,
            )
            for r in rows
        ]
