"""What a row of each workbook is: the typed rows the reader produces, the row errors it reports, and the
sheet schemas (which fields, under which normalised header names, parsed how, checked together how)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from app.credit.policy import Policy, approved_limit_for
from app.ingestion.cells import age, count, date, identifier, money, name, phone, positive_money, rate, tenure

MAX_REPORTED_ERRORS = 100
"""Row errors kept in full; beyond this the report only counts them."""


class WorkbookError(Exception):
    """The file as a whole cannot be ingested: unreadable, empty, or a required column is missing."""


class RowError(NamedTuple):
    sheet: str
    row: int
    column: str
    reason: str
    value: str | None


class CustomerRow(NamedTuple):
    """One valid customer row, in the staging table's column order."""

    row_number: int
    customer_id: int
    first_name: str
    last_name: str
    age: int | None
    phone_number: int
    monthly_salary: Decimal
    approved_limit: Decimal


class LoanRow(NamedTuple):
    """One valid loan row, in the staging table's column order."""

    row_number: int
    customer_id: int
    source_loan_id: int
    loan_amount: Decimal
    tenure: int
    interest_rate: Decimal
    monthly_installment: Decimal
    emis_paid_on_time: int
    start_date: dt.date
    end_date: dt.date


# --------------------------------------------------------------------------------------------------
# Sheet schemas: the fields a file must (or may) have, under which normalised header names.


def normalise_header(header: object) -> str:
    """`Customer ID`, `Customer Id`, `customer_id`, ` CUSTOMER-ID ` -> `customerid`."""
    return re.sub(r"[^a-z0-9]", "", str(header).lower())


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    label: str
    aliases: tuple[str, ...]
    parse: Callable[..., Any]
    required: bool = True
    needs_epoch: bool = False

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(normalise_header(alias) for alias in (self.label, *self.aliases))


@dataclass(frozen=True, slots=True)
class Schema:
    kind: str
    fields: tuple[Field, ...]
    row_type: type[CustomerRow] | type[LoanRow]
    # Checks across the fields of an otherwise valid row: row -> (field name, reason) or None.
    cross_checks: tuple[Callable[[Any], tuple[str, str] | None], ...] = ()
    # Fields computed from the others (and the credit policy) when the file has no column for them.
    derived: dict[str, Callable[[Any, Policy], Any]] = field(default_factory=dict)


def limit_from_salary(row: CustomerRow, policy: Policy) -> Decimal:
    """The registration rule, used only when the file has no Approved Limit column (the export's own
    limits do not follow it, so they are taken as given when present)."""
    return approved_limit_for(row.monthly_salary, policy)


def _emis_within_tenure(row: LoanRow) -> tuple[str, str] | None:
    if row.emis_paid_on_time > row.tenure:
        return (
            "emis_paid_on_time",
            f"EMIs paid on time ({row.emis_paid_on_time}) exceed the tenure ({row.tenure})",
        )
    return None


def _end_after_start(row: LoanRow) -> tuple[str, str] | None:
    if row.end_date < row.start_date:
        return "end_date", f"end date {row.end_date} is before the start date {row.start_date}"
    return None


CUSTOMERS = Schema(
    kind="customers",
    fields=(
        Field("customer_id", "Customer ID", ("customer_id",), identifier),
        Field("first_name", "First Name", ("first_name",), name),
        Field("last_name", "Last Name", ("last_name",), name),
        Field("age", "Age", (), age, required=False),
        Field("phone_number", "Phone Number", ("phone", "mobile"), phone),
        Field("monthly_salary", "Monthly Salary", ("monthly_income", "salary"), money),
        Field("approved_limit", "Approved Limit", (), money, required=False),
    ),
    row_type=CustomerRow,
    derived={"approved_limit": limit_from_salary},
)

LOANS = Schema(
    kind="loans",
    fields=(
        Field("customer_id", "Customer ID", ("customer_id",), identifier),
        Field("source_loan_id", "Loan ID", ("loan_id",), identifier),
        Field("loan_amount", "Loan Amount", (), positive_money),
        Field("tenure", "Tenure", ("tenure_months",), tenure),
        Field("interest_rate", "Interest Rate", (), rate),
        Field(
            "monthly_installment",
            "Monthly payment",
            ("monthly_repayment", "monthly_installment", "emi"),
            money,
        ),
        Field("emis_paid_on_time", "EMIs paid on Time", ("emis_paid_on_time",), count),
        Field("start_date", "Date of Approval", ("start_date", "approval_date"), date, needs_epoch=True),
        Field("end_date", "End Date", ("end_date",), date, needs_epoch=True),
    ),
    row_type=LoanRow,
    cross_checks=(_emis_within_tenure, _end_after_start),
)
