"""The tables. Their names and columns are a contract: operators query them directly."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MONEY = Numeric(14, 2)
RATE = Numeric(5, 2)
POINTS = Numeric(5, 2)  # a score component, 0-100
# What a loan has received in all: interest over up to 600 installments can exceed MONEY's range.
TOTAL_MONEY = Numeric(18, 2)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        CheckConstraint("age IS NULL OR age BETWEEN 0 AND 150", name="age_range"),
        CheckConstraint("phone_number > 0", name="phone_positive"),
        CheckConstraint("monthly_salary >= 0", name="salary_non_negative"),
        CheckConstraint("approved_limit >= 0", name="limit_non_negative"),
        # Loans imports map a workbook Customer ID to customer_id; only re-keyed customers need it.
        Index(
            "ix_customers_rekeyed_source",
            "source_customer_id",
            postgresql_where=text("customer_id <> source_customer_id"),
            postgresql_include=["customer_id"],
        ),
    )

    customer_id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    age: Mapped[int | None] = mapped_column(SmallInteger)
    phone_number: Mapped[int] = mapped_column(BigInteger, unique=True)
    monthly_salary: Mapped[Decimal] = mapped_column(MONEY)
    approved_limit: Mapped[Decimal] = mapped_column(MONEY)
    # The workbook Customer ID an import created this customer under (NULL: registered through the API).
    # A workbook row only ever updates the customer an earlier import created with its id.
    source_customer_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    # True only for rows that predate source_customer_id (migration 0003): imported or registered,
    # nobody can tell, so an import adopts one only when the workbook's phone number matches.
    origin_unknown: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Loan(Base):
    __tablename__ = "loans"
    __table_args__ = (
        UniqueConstraint("customer_id", "source_loan_id", name="uq_loans_customer_source_loan"),
        CheckConstraint("loan_amount > 0", name="amount_positive"),
        CheckConstraint("tenure > 0", name="tenure_positive"),
        CheckConstraint("interest_rate >= 0", name="rate_non_negative"),
        CheckConstraint("monthly_installment >= 0", name="installment_non_negative"),
        CheckConstraint("emis_paid_on_time BETWEEN 0 AND tenure", name="emis_paid_within_tenure"),
        CheckConstraint("end_date >= start_date", name="end_after_start"),
        # Servicing invariants (issue #11; arithmetic in app/credit/schedule.py).
        CheckConstraint("outstanding_principal BETWEEN 0 AND loan_amount", name="outstanding_within_amount"),
        CheckConstraint("installments_paid BETWEEN 0 AND tenure", name="installments_paid_within_tenure"),
        CheckConstraint(
            "repayments_left >= 0 AND installments_paid + repayments_left <= tenure",
            name="repayments_left_within_tenure",
        ),
        CheckConstraint("amount_paid >= 0", name="amount_paid_non_negative"),
        # Paid off exactly when nothing is owed, and then nothing is left to pay.
        CheckConstraint(
            "(outstanding_principal = 0) = (paid_off_on IS NOT NULL)"
            " AND (outstanding_principal = 0) = (repayments_left = 0)",
            name="paid_off_when_repaid",
        ),
        CheckConstraint("last_paid_on >= start_date", name="paid_after_start"),
        # Every hot read starts from one customer: the eligibility aggregates and view-loans are
        # answered from this index alone (index-only scans), whatever the size of the loan book.
        Index(
            "ix_loans_customer_id_end_date",
            "customer_id",
            "end_date",
            postgresql_include=[
                "loan_amount",
                "monthly_installment",
                "tenure",
                "emis_paid_on_time",
                "start_date",
                "interest_rate",
                "paid_off_on",
                "installments_paid",
                "repayments_left",
                "amount_paid",
            ],
        ),
    )

    loan_id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.customer_id", ondelete="RESTRICT")
    )
    source_loan_id: Mapped[int | None] = mapped_column(BigInteger)
    loan_amount: Mapped[Decimal] = mapped_column(MONEY)
    tenure: Mapped[int] = mapped_column(Integer)
    interest_rate: Mapped[Decimal] = mapped_column(RATE)
    monthly_installment: Mapped[Decimal] = mapped_column(MONEY)
    emis_paid_on_time: Mapped[int] = mapped_column(Integer, server_default="0")
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date] = mapped_column(Date)
    # Servicing state, kept by make-payment (and set by an import from the workbook's EMIs paid on time).
    # monthly_installment above is the EMI in force: a payment of another amount re-prices it.
    outstanding_principal: Mapped[Decimal] = mapped_column(MONEY)
    installments_paid: Mapped[int] = mapped_column(Integer, server_default="0")
    amount_paid: Mapped[Decimal] = mapped_column(TOTAL_MONEY, server_default="0")
    # Installments of the schedule still to pay: tenure - paid, or fewer where rounding ends it early.
    repayments_left: Mapped[int] = mapped_column(Integer)
    # The day the loan was paid off: it counts as closed from then on (NULL: not paid off).
    paid_off_on: Mapped[dt.date | None] = mapped_column(Date)
    # The latest payment made through the API (NULL: none). An import never changes a loan that has one.
    last_paid_on: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Payment(Base):
    """One payment through the API: it settled one installment of its loan."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("installment_number > 0", name="installment_positive"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("interest >= 0 AND principal >= 0", name="parts_non_negative"),
        CheckConstraint("amount = interest + principal", name="parts_add_up"),
        # One payment per installment; the statement reads a loan's payments from this index alone.
        Index(
            "uq_payments_loan_id_installment_number",
            "loan_id",
            "installment_number",
            unique=True,
            postgresql_include=["packed"],
        ),
    )

    payment_id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    loan_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("loans.loan_id", ondelete="RESTRICT"))
    installment_number: Mapped[int] = mapped_column(Integer)
    paid_on: Mapped[dt.date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(MONEY)
    interest: Mapped[Decimal] = mapped_column(MONEY)
    principal: Mapped[Decimal] = mapped_column(MONEY)
    on_time: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # What view-statement reads of the payment, computed by PostgreSQL from the columns above (migration
    # 0006, which explains why): app.servicing.rows.PAYMENT is its layout.
    packed: Mapped[bytes] = mapped_column(
        LargeBinary,
        Computed(
            "int4send(installment_number) || int8send(payment_id)"
            " || int4send(paid_on - DATE '0001-01-01' + 1)"
            " || int8send(CAST(interest * 100 AS bigint)) || int8send(CAST(principal * 100 AS bigint))"
            " || boolsend(on_time)",
            persisted=True,
        ),
        comment=(
            "The payment as view-statement reads it (app.servicing.rows.PAYMENT): installment_number,"
            " payment_id, paid_on's ordinal, interest and principal in cents, on_time; big-endian, 33 bytes."
        ),
    )


class CreditPolicy(Base):
    """Each effective credit policy once: the decisions recorded under its version can be explained."""

    __tablename__ = "credit_policies"

    version: Mapped[str] = mapped_column(String(12), primary_key=True)
    policy_values: Mapped[dict[str, Any]] = mapped_column(JSONB)
    first_used: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CreditDecision(Base):
    """A create-loan decision, approved or not, as it was made. Append-only (a trigger, migration 0005)."""

    __tablename__ = "credit_decisions"
    __table_args__ = (
        CheckConstraint("approved = (loan_id IS NOT NULL)", name="loan_when_approved"),
        Index("ix_credit_decisions_customer_id_decision_id", "customer_id", "decision_id"),
    )

    decision_id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.customer_id", ondelete="RESTRICT")
    )
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The application.
    loan_amount: Mapped[Decimal] = mapped_column(MONEY)
    interest_rate: Mapped[Decimal] = mapped_column(RATE)
    tenure: Mapped[int] = mapped_column(Integer)
    # The profile that was scored.
    approved_limit: Mapped[Decimal] = mapped_column(MONEY)
    monthly_salary: Mapped[Decimal] = mapped_column(MONEY)
    current_debt: Mapped[Decimal] = mapped_column(TOTAL_MONEY)
    current_emis: Mapped[Decimal] = mapped_column(TOTAL_MONEY)
    emis_due: Mapped[int] = mapped_column(BigInteger)
    emis_paid_due: Mapped[int] = mapped_column(BigInteger)
    closed_loans: Mapped[int] = mapped_column(BigInteger)
    loans_this_year: Mapped[int] = mapped_column(BigInteger)
    # The score and the outcome.
    credit_score: Mapped[int] = mapped_column(SmallInteger)
    payment_history: Mapped[Decimal] = mapped_column(POINTS)
    utilisation: Mapped[Decimal] = mapped_column(POINTS)
    track_record: Mapped[Decimal] = mapped_column(POINTS)
    recent_activity: Mapped[Decimal] = mapped_column(POINTS)
    approved: Mapped[bool] = mapped_column(Boolean)
    corrected_interest_rate: Mapped[Decimal | None] = mapped_column(RATE)
    monthly_installment: Mapped[Decimal | None] = mapped_column(MONEY)
    reasons: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    policy_version: Mapped[str] = mapped_column(
        String(12), ForeignKey("credit_policies.version", ondelete="RESTRICT")
    )
    loan_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("loans.loan_id", ondelete="RESTRICT"))
    request_id: Mapped[str | None] = mapped_column(String(128))


class IdempotencyKey(Base):
    """A completed request's response, replayed to retries that carry the same Idempotency-Key."""

    __tablename__ = "idempotency_keys"

    # sha256 prefix of the API key that sent the request ('' when access control is off): one client's
    # keys can neither collide with nor replay another client's responses.
    principal: Mapped[str] = mapped_column(String(64), primary_key=True, server_default="")
    method_path: Mapped[str] = mapped_column(String(200), primary_key=True)  # e.g. "POST /api/register"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical JSON request body
    status_code: Mapped[int] = mapped_column(SmallInteger)
    response_body: Mapped[str] = mapped_column(Text)  # the exact bytes sent, replayed as they were
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
