"""The loans file's loader: staged and merged batch by batch (see app.ingestion.staging)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.ingestion.report import MAX_LISTED, BatchInfo, FileReport, RekeyedLoan, ServicedLoan
from app.ingestion.sheet import SheetHeader
from app.ingestion.staging import Loader, advance_identity_sequences, advance_sequence, prefixed, row_total

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


class LoanLoader(Loader):
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
            await advance_sequence(self.conn, "loans", "loan_id", self.max_loan_id)
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
            total=row_total(rows),
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
        return row_total(rows), listed

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
                UPDATE loans t SET ({_LOAN_VALUES}) = ({prefixed("f", _LOAN_VALUES)})
                FROM ingest_final f
                WHERE t.loan_id = f.target_loan_id
                  AND t.last_paid_on IS NULL  -- serviced here: the API's payments are the ledger
                  AND ({prefixed("t", _LOAN_VALUES)}) IS DISTINCT FROM ({prefixed("f", _LOAN_VALUES)})
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
        return row_total(rows), listed
