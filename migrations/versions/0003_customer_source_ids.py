"""customers remember the workbook Customer ID they were imported under

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 16:00:00

An import used to write a workbook's Customer ID straight into customer_id, so it overwrote any customer
registered through the API under that id. Now an imported customer keeps the workbook's id in
source_customer_id (unique), as loans keep theirs in source_loan_id, and a workbook row only ever updates
the customer an earlier import created with that id.

Rows that exist when this runs cannot be told apart (imported or registered?): they are marked
origin_unknown. For those, an import adopts the row only when the workbook's phone number matches the
customer's (see app/ingestion/customers.py); otherwise the workbook row is re-keyed. Both new columns are
metadata-only changes in PostgreSQL 11+: no table rewrite, whatever the table's size.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("source_customer_id", sa.BigInteger(), nullable=True))
    op.create_unique_constraint(op.f("uq_customers_source_customer_id"), "customers", ["source_customer_id"])
    # Existing rows: origin unknown (true); rows inserted from now on: known (false).
    op.add_column(
        "customers",
        sa.Column("origin_unknown", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.alter_column("customers", "origin_unknown", server_default=sa.false())
    # A loans import maps each row's workbook Customer ID to the stored customer_id; only re-keyed
    # customers need a change, and this index holds just those (none, on most databases).
    op.create_index(
        "ix_customers_rekeyed_source",
        "customers",
        ["source_customer_id"],
        unique=False,
        postgresql_where=sa.text("customer_id <> source_customer_id"),
        postgresql_include=["customer_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_customers_rekeyed_source", table_name="customers")
    op.drop_column("customers", "origin_unknown")
    op.drop_constraint(op.f("uq_customers_source_customer_id"), "customers", type_="unique")
    op.drop_column("customers", "source_customer_id")
