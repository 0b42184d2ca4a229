"""Request and response models of make-payment and view-statement."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.credit.statement import DelinquencyClass, InstallmentStatus
from app.credit.statement import LoanStatus as ServicingStatus
from app.loans.schemas import LOAN_STATUS_DOC, REPAYMENTS_LEFT_DOC
from app.schemas import MAX_MONEY, CustomerId, DatabaseId, LoanId, Money, MoneyIn, Rate

PAYMENT_EXAMPLE: dict[str, Any] = {"amount": 9414.69, "paid_on": "2026-02-01"}


def _iso_date_text(value: Any) -> Any:
    # Only the calendar date as JSON text: pydantic alone would also take a number (a Unix time) or a
    # datetime at midnight.
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [PAYMENT_EXAMPLE]})

    amount: MoneyIn = Field(
        gt=0,
        le=MAX_MONEY,
        max_digits=14,
        decimal_places=2,
        description="What the borrower pays, a currency amount (> 0, at most 2 decimals). It settles the "
        "next unpaid installment: interest first, the rest repays principal. At least that installment's "
        "interest, at most the payoff; the last installment takes exactly the payoff.",
        examples=[9414.69],
    )
    paid_on: Annotated[dt.date, BeforeValidator(_iso_date_text)] | None = Field(
        default=None,
        description="The day the money was received, `YYYY-MM-DD` (UTC); today when omitted. Never in the "
        "future, never before the loan's start date or its latest payment.",
        examples=["2026-02-01"],
    )


class PaymentOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "payment_id": 1,
                    "customer_id": 42,
                    "loan_id": 1001,
                    "installment_number": 1,
                    "amount": 9414.69,
                    "interest": 2000.0,
                    "principal": 7414.69,
                    "paid_on": "2026-02-01",
                    "on_time": True,
                    "outstanding_principal": 192585.31,
                    "monthly_installment": 9414.69,
                    "repayments_left": 23,
                    "loan_status": "active",
                }
            ]
        }
    )

    payment_id: DatabaseId = Field(description="Identifier of the payment.")
    customer_id: CustomerId
    loan_id: LoanId
    installment_number: int = Field(ge=1, description="The installment this payment settled (1 = the first).")
    amount: Money = Field(description="What was paid, a currency amount.")
    interest: Money = Field(description="The part of the amount that paid the installment's interest.")
    principal: Money = Field(description="The part of the amount that repaid principal.")
    paid_on: dt.date = Field(description="The day the money was received.")
    on_time: bool = Field(
        description="Paid on or before the installment's due date, and at least what was due for it (the "
        "EMI in force, or the payoff when that is smaller). It then counts in the credit score's payment "
        "history."
    )
    outstanding_principal: Money = Field(description="Principal still owed after this payment.")
    monthly_installment: Money = Field(
        description="The EMI in force from the next installment, a currency amount: unchanged when the "
        "amount was the EMI, "
        "otherwise re-priced over the installments left at the loan's rate."
    )
    repayments_left: int = Field(ge=0, description=REPAYMENTS_LEFT_DOC)
    loan_status: ServicingStatus = Field(description=LOAN_STATUS_DOC)


class InstallmentOut(BaseModel):
    number: int = Field(ge=1, description="1 for the first installment, up to the tenure.")
    due_date: dt.date = Field(description="Start date plus `number` months (clamped to the month's end).")
    amount: Money = Field(
        description="A currency amount. Paid rows: what was paid. Unpaid rows: what is projected to be due."
    )
    principal: Money = Field(description="The part of the amount that repays principal.")
    interest: Money = Field(description="Interest on the balance before this installment, for one month.")
    balance_after: Money = Field(description="Principal owed once this installment is paid.")
    status: InstallmentStatus = Field(
        description="`paid_on_time`, `paid_late` (late or short), `overdue` (unpaid, due before today) or "
        "`upcoming`. An imported loan's EMIs paid on time are shown as paid on time."
    )
    paid_on: dt.date | None = Field(
        description="When it was paid; null for unpaid rows and for installments an import recorded "
        "(the workbook has no payment dates)."
    )


class PaymentLineOut(BaseModel):
    payment_id: DatabaseId = Field(description="Identifier of the payment.")
    paid_on: dt.date = Field(description="The day the money was received.")
    amount: Money = Field(description="What was paid, a currency amount.")
    interest: Money = Field(description="The part that paid interest.")
    principal: Money = Field(description="The part that repaid principal.")
    installment_number: int = Field(ge=1, description="The installment it settled.")
    on_time: bool = Field(description="Whether it counted as paid on time.")


class NextInstallmentOut(BaseModel):
    due_date: dt.date = Field(description="When the next unpaid installment is (or was) due.")
    amount: Money = Field(
        description="What it asks for, a currency amount: the EMI in force, or the payoff for the last one."
    )


# A 3-month loan of 30,000 at 12%, its first installment paid the day before it was due; seen on 2026-03-20,
# five days after the second one fell due.
STATEMENT_EXAMPLE: dict[str, Any] = {
    "customer_id": 42,
    "loan_id": 1001,
    "principal": 30000.0,
    "interest_rate": 12.0,
    "amount_paid": 10200.66,
    "monthly_installment": 10200.66,
    "repayments_left": 2,
    "outstanding_principal": 20099.34,
    "loan_status": "overdue",
    "days_past_due": 5,
    "delinquency_class": "SMA-0",
    "next_due_date": "2026-03-15",
    "next_installment": {"due_date": "2026-03-15", "amount": 10200.66},
    "payoff_amount": 20300.33,
    "installments": [
        {
            "number": 1,
            "due_date": "2026-02-15",
            "amount": 10200.66,
            "principal": 9900.66,
            "interest": 300.0,
            "balance_after": 20099.34,
            "status": "paid_on_time",
            "paid_on": "2026-02-14",
        },
        {
            "number": 2,
            "due_date": "2026-03-15",
            "amount": 10200.66,
            "principal": 9999.67,
            "interest": 200.99,
            "balance_after": 10099.67,
            "status": "overdue",
            "paid_on": None,
        },
        {
            "number": 3,
            "due_date": "2026-04-15",
            "amount": 10200.67,
            "principal": 10099.67,
            "interest": 101.0,
            "balance_after": 0.0,
            "status": "upcoming",
            "paid_on": None,
        },
    ],
    "payments": [
        {
            "payment_id": 7,
            "paid_on": "2026-02-14",
            "amount": 10200.66,
            "interest": 300.0,
            "principal": 9900.66,
            "installment_number": 1,
            "on_time": True,
        }
    ],
}


class StatementHead(BaseModel):
    """Everything in a statement but its installments and payments."""

    customer_id: CustomerId
    loan_id: LoanId
    principal: Money = Field(description="The amount lent.")
    interest_rate: Rate = Field(description="Interest rate, % per year.")
    amount_paid: Money = Field(description="Everything paid so far, interest and principal.")
    monthly_installment: Money = Field(description="The EMI in force, a currency amount.")
    repayments_left: int = Field(ge=0, description=REPAYMENTS_LEFT_DOC)
    outstanding_principal: Money = Field(description="Principal still owed.")
    loan_status: ServicingStatus = Field(description=LOAN_STATUS_DOC)
    days_past_due: int = Field(
        ge=0, description="Days since the oldest unpaid installment fell due; 0 when none is overdue."
    )
    delinquency_class: DelinquencyClass = Field(
        description="By days past due, as RBI's IRAC norms classify: `standard` (0), `SMA-0` (1-30), "
        "`SMA-1` (31-60), `SMA-2` (61-90), `NPA` (over 90)."
    )
    next_due_date: dt.date | None = Field(
        description="Due date of the next unpaid installment (possibly overdue); null when paid off."
    )
    next_installment: NextInstallmentOut | None = Field(
        description="The next unpaid installment: its due date and its amount, a currency amount; null when "
        "paid off."
    )
    payoff_amount: Money = Field(
        description="What pays the loan off today, a currency amount: the outstanding principal plus the "
        "next installment's interest; 0 when paid off."
    )


class StatementOut(StatementHead):
    model_config = ConfigDict(json_schema_extra={"examples": [STATEMENT_EXAMPLE]})

    installments: list[InstallmentOut] = Field(
        description="The whole schedule: paid rows as paid, then the rest projected from the outstanding "
        "principal with the EMI in force."
    )
    payments: list[PaymentLineOut] = Field(description="Payments made through the API, oldest first.")
