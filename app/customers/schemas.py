from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from app.loans.schemas import ScoreBreakdownOut
from app.schemas import CustomerId, IncomeIn, Money, WholeNumber

# Names are trimmed, then 1-100 characters. The document says exactly that with a pattern (minLength and
# maxLength would count the surrounding spaces that trimming removes). The whitespace class is spelled out
# as what pydantic trims (Unicode White_Space), which is neither Python's `\s` nor ECMA-262's.
_SPACE = r"\t\n\x0b\x0c\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Characters that show nothing: controls, and the format characters (zero-width space and joiners, bidi
# marks, the soft hyphen, the BOM). A name must have at least one character that is neither these nor space.
_INVISIBLE = r"\x01-\x1f\x7f-\x9f\xad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff"
# NUL is refused: PostgreSQL text cannot hold it.
NAME_PATTERN = (
    rf"^(?=[\s\S]*[^\x00{_INVISIBLE}{_SPACE}])"
    rf"[{_SPACE}]*[^\x00{_SPACE}](?:[^\x00]{{0,98}}[^\x00{_SPACE}])?[{_SPACE}]*$"
)
_VISIBLE = re.compile(rf"[^\x00{_INVISIBLE}{_SPACE}]")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not _VISIBLE.search(value):
        raise ValueError("must contain a visible character")
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_no_nul),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN}, mode="validation"),
]
MIN_PHONE, MAX_PHONE = 1_000_000_000, 9_999_999_999
PHONE_PATTERN = "^[1-9][0-9]{9}$"
# 36 x income must still fit NUMERIC(14,2); ten billion a month is far beyond any real salary.
MAX_INCOME = Decimal("10000000000")


# A number or a digit string (validated by ten_digit_phone), answered as a number.
PhoneIn = Annotated[
    int,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": MIN_PHONE, "maximum": MAX_PHONE},
                {"type": "string", "pattern": PHONE_PATTERN},
            ]
        },
        mode="validation",
    ),
]


def ten_digit_phone(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON's 9876543210.0 is the number 9876543210
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("phone_number must be a 10-digit number or digit string")
    text = str(value)
    if not re.fullmatch(PHONE_PATTERN, text):
        raise ValueError("phone_number must have exactly 10 digits and not start with 0")
    return int(text)


class RegisterRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "first_name": "Asha",
                    "last_name": "Rao",
                    "age": 31,
                    "monthly_income": 62500,
                    "phone_number": 9876543210,
                }
            ]
        },
    )

    first_name: Name = Field(description="Given name, 1-100 characters.")
    last_name: Name = Field(description="Family name, 1-100 characters.")
    age: Annotated[int, Strict(), WholeNumber] = Field(ge=18, le=120, description="Age in years (18-120).")
    monthly_income: IncomeIn = Field(
        gt=0,
        le=MAX_INCOME,
        max_digits=13,
        decimal_places=2,
        description="Monthly income, a currency amount with at most 2 decimals.",
    )
    phone_number: PhoneIn = Field(
        description="10-digit phone number, as a number or a digit string; answered as a number."
    )

    @field_validator("phone_number", mode="before")
    @classmethod
    def _ten_digits(cls, value: Any) -> int:
        return ten_digit_phone(value)


class CustomerOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": 301,
                    "name": "Asha Rao",
                    "first_name": "Asha",
                    "last_name": "Rao",
                    "age": 31,
                    "monthly_income": 62500.0,
                    "approved_limit": 2300000.0,
                    "phone_number": 9876543210,
                }
            ]
        }
    )

    customer_id: CustomerId
    name: str = Field(description="First and last name.")
    first_name: str = Field(description="Given name.")
    last_name: str = Field(description="Family name.")
    age: int | None = Field(description="Age in years; null for some ingested customers.")
    monthly_income: Money = Field(description="Monthly income, currency amount.")
    approved_limit: Money = Field(
        description="Credit limit, a currency amount: 36 x monthly income, rounded half-up to the "
        "nearest 100,000."
    )
    phone_number: int = Field(description="10-digit phone number.")


CREDIT_EXAMPLE: JsonDict = {
    "credit_score": 72,
    "score_breakdown": {
        "payment_history": 35.0,
        "utilisation": 17.0,
        "track_record": 0.0,
        "recent_activity": 20.0,
    },
    "current_debt": 1000000.0,
    "available_limit": 1300000.0,
    "current_emis": 9000.0,
    "emi_headroom": 22250.0,
    "active_loans": 1,
    "overdue_installments": 0,
    "days_past_due": 0,
}


class CreditSummaryOut(BaseModel):
    credit_score: int = Field(ge=0, le=100, description="Credit score today, 0-100.")
    score_breakdown: ScoreBreakdownOut = Field(description="The score's four components.")
    current_debt: Money = Field(description="Principal of the current loans, a currency amount.")
    available_limit: Money = Field(
        description="What the approved limit leaves, a currency amount: max(0, approved limit - current "
        "debt)."
    )
    current_emis: Money = Field(description="Monthly installments of the current loans, a currency amount.")
    emi_headroom: Money = Field(
        description="Room for a new installment: max(0, the policy's EMI share x salary - current "
        "installments), a currency amount."
    )
    active_loans: int = Field(ge=0, description="Current loans (end date today or later, not paid off).")
    overdue_installments: int = Field(ge=0, description="Unpaid installments whose due date is before today.")
    days_past_due: int = Field(ge=0, description="The worst days past due across the customer's loans.")


class CustomerDetailOut(CustomerOut):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": 301,
                    "name": "Asha Rao",
                    "first_name": "Asha",
                    "last_name": "Rao",
                    "age": 31,
                    "monthly_income": 62500.0,
                    "approved_limit": 2300000.0,
                    "phone_number": 9876543210,
                    "created_at": "2026-06-15T12:00:00Z",
                    "credit": CREDIT_EXAMPLE,
                }
            ]
        }
    )

    created_at: dt.datetime = Field(description="When the customer was registered (or first imported).")
    credit: CreditSummaryOut = Field(description="Where the customer's credit stands today.")


class CustomerListItemOut(CustomerOut):
    created_at: dt.datetime = Field(description="When the customer was registered (or first imported).")


def _patch_schema(schema: dict[str, Any]) -> None:
    # Every field is optional, but none takes null: no "default": null in the document.
    for definition in schema.get("properties", {}).values():
        definition.pop("default", None)
    schema["examples"] = [{"monthly_income": 75000}]
    schema["minProperties"] = 1


class CustomerPatch(BaseModel):
    """Any of first_name, last_name, age, phone_number and monthly_income, validated as register does."""

    # The fields default to None only so that "not given" (model_fields_set) can be told apart: null is
    # not a value any of them takes, and the document says so (_patch_schema). Hence the type: ignores:
    # typed `X | None`, they would accept null.

    model_config = ConfigDict(extra="forbid", json_schema_extra=_patch_schema)

    first_name: Name = Field(default=None, description="Given name, 1-100 characters.")  # type: ignore[assignment]
    last_name: Name = Field(default=None, description="Family name, 1-100 characters.")  # type: ignore[assignment]
    age: Annotated[int, Strict(), WholeNumber] = Field(  # type: ignore[assignment]
        default=None, ge=18, le=120, description="Age in years (18-120)."
    )
    monthly_income: IncomeIn = Field(  # type: ignore[assignment]
        default=None,
        gt=0,
        le=MAX_INCOME,
        max_digits=13,
        decimal_places=2,
        description="Monthly income, a currency amount with at most 2 decimals; the approved limit is "
        "recomputed from it.",
    )
    phone_number: PhoneIn = Field(  # type: ignore[assignment]
        default=None, description="10-digit phone number, as a number or a digit string."
    )

    @field_validator("phone_number", mode="before")
    @classmethod
    def _ten_digits(cls, value: Any) -> int:
        return ten_digit_phone(value)

    @model_validator(mode="after")
    def _something(self) -> CustomerPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of first_name, last_name, age, phone_number, monthly_income")
        return self


class CustomerUpdateOut(CustomerOut):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": 301,
                    "name": "Asha Rao",
                    "first_name": "Asha",
                    "last_name": "Rao",
                    "age": 31,
                    "monthly_income": 75000.0,
                    "approved_limit": 2700000.0,
                    "phone_number": 9876543210,
                    "approved_limit_recomputed": True,
                    "previous_approved_limit": 2300000.0,
                }
            ]
        }
    )

    approved_limit_recomputed: bool = Field(
        description="True when a new monthly income recomputed the approved limit by the policy's rule."
    )
    previous_approved_limit: Money | None = Field(
        description="The limit before, a currency amount, when it was recomputed; null otherwise."
    )
