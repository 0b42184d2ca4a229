"""An import's report, file by file: what was read, loaded, skipped, re-keyed, and the rows behind each
count (the first 100 of each kind). What the job state and GET /api/ingestions/{id} return."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.import_locks import FileKind
from app.ingestion.rows import MAX_REPORTED_ERRORS, RowError

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
