from __future__ import annotations

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
)

from app.schemas import CustomerId, IncomeIn, Money, WholeNumber

# Names are trimmed, then 1-100 characters. The document says exactly that with a pattern (minLength and
# maxLength would count the surrounding spaces that trimming removes). The whitespace class is spelled out
# as what pydantic trims (Unicode White_Space), which is neither Python's `\s` nor ECMA-262's.
_SPACE = r"\t\n\x0b\x0c\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# NUL is refused: PostgreSQL text cannot hold it.
NAME_PATTERN = rf"^[{_SPACE}]*[^\x00{_SPACE}](?:[^\x00]{{0,98}}[^\x00{_SPACE}])?[{_SPACE}]*$"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
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
    phone_number: Annotated[
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
    ] = Field(description="10-digit phone number, as a number or a digit string; answered as a number.")

    @field_validator("phone_number", mode="before")
    @classmethod
    def _ten_digits(cls, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON's 9876543210.0 is the number 9876543210
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("phone_number must be a 10-digit number or digit string")
        text = str(value)
        if not re.fullmatch(PHONE_PATTERN, text):
            raise ValueError("phone_number must have exactly 10 digits and not start with 0")
        return int(text)


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
