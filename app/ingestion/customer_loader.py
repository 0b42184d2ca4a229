"""The customers file's loader: staged, then merged once, at the end of the file (app.ingestion.staging
says how a file loads)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from app.ingestion.report import MAX_LISTED, FileReport, RekeyedCustomer
from app.ingestion.staging import Loader, advance_identity_sequences, advance_sequence, prefixed, row_total

_CUSTOMER_VALUES = "first_name, last_name, age, phone_number, monthly_salary, approved_limit"


class CustomerLoader(Loader):
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
        await advance_sequence(self.conn, "customers", "customer_id", max_id)
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

        self._reject(rows[: self._room()], "phone_number", reason, total=row_total(rows))

    async def _update_existing(self) -> tuple[int, int, int]:
        """Write the rows whose customer exists (only where values differ, or to adopt a customer of
        unknown origin). Returns (updated, existing, adopted)."""
        updated, existing, adopted = await self._one(
            f"""
            WITH targets AS (
                SELECT f.*, ({prefixed("c", _CUSTOMER_VALUES)}) IS DISTINCT FROM
                            ({prefixed("f", _CUSTOMER_VALUES)}) AS changed
                FROM ingest_customers_final f JOIN customers c ON c.customer_id = f.target_customer_id
            ),
            written AS (
                UPDATE customers c
                SET ({_CUSTOMER_VALUES}, source_customer_id, origin_unknown)
                    = ({prefixed("t", _CUSTOMER_VALUES)}, t.source_customer_id, false)
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
        return row_total(rows), listed


# The workbook's columns, then the servicing state the reader computed from them (issue #11: the first
# EMIs-paid installments amortised with the formula's EMI). A changed row changes both; a loan with payments
# through the API is never changed (see _update_existing).
