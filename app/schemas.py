"""Value types shared by the request and response models."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, Strict, WithJsonSchema

# Ids are PostgreSQL bigints: the API takes every one of them, 1..2**63 - 1 (app.main keeps the bound
# exact in the OpenAPI document).
MAX_ID = 2**63 - 1
MAX_MONEY = Decimal("999999999999.99")  # NUMERIC(14,2)


def _json_number(value: Decimal) -> float:
    # `or 0.0`: -0 (a request may say -0.0) is answered as 0, never "-0.0".
    return float(value) or 0.0


# Money travels as a JSON number (never a string) and is a Decimal inside the service.
# Values are at most 14 significant digits, which a JSON/float number renders exactly.
Money = Annotated[Decimal, PlainSerializer(_json_number, return_type=float, when_used="json")]
Rate = Annotated[Decimal, PlainSerializer(_json_number, return_type=float, when_used="json")]


def _whole_number(value: Any) -> Any:
    # JSON has one number type: 31.0 is the integer 31 (JSON Schema agrees), while 31.5 and "31" are not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Strict integers (no strings, no booleans) that also take an integral JSON number such as 31.0.
WholeNumber = BeforeValidator(_whole_number)

DatabaseId = Annotated[int, Strict(), Field(ge=1, le=MAX_ID), WholeNumber]
CustomerId = Annotated[
    int, Strict(), Field(ge=1, le=MAX_ID, description="Customer identifier.", examples=[42]), WholeNumber
]
LoanId = Annotated[
    int, Strict(), Field(ge=1, le=MAX_ID, description="Loan identifier.", examples=[1001]), WholeNumber
]


def decimal_input(*, pattern: str, number: dict[str, Any]) -> tuple[BeforeValidator, WithJsonSchema]:
    """Metadata for a Decimal request field that takes a JSON number or a plain decimal string.

    The OpenAPI document states exactly what is accepted (fuzzing holds it to that): numbers within
    `number`'s bounds in steps of 0.01, or strings matching `pattern`, which spells out the same range in
    plain notation (no sign, exponent, spaces or leading zeros). The validator enforces the pattern;
    the field's own constraints (gt/le/decimal_places) still check the number.
    """
    regex = re.compile(pattern)

    def plain_decimal_text(value: Any) -> Any:
        if isinstance(value, str) and not regex.fullmatch(value):
            raise ValueError("must be a number, or a plain decimal string such as '1234.50', within range")
        return value

    schema = {
        "anyOf": [{"type": "number", "multipleOf": 0.01, **number}, {"type": "string", "pattern": pattern}]
    }
    return BeforeValidator(plain_decimal_text), WithJsonSchema(schema, mode="validation")


# > 0 with at most 2 decimals: a non-zero integer part, or 0.xx with a non-zero fraction.
_POSITIVE_CENTS_FRACTION = r"0\.(?:0[1-9]|[1-9][0-9]?)"
POSITIVE_MONEY_PATTERN = rf"^(?:[1-9][0-9]{{0,11}}(?:\.[0-9]{{1,2}})?|{_POSITIVE_CENTS_FRACTION})$"
INCOME_PATTERN = (
    rf"^(?:[1-9][0-9]{{0,9}}(?:\.[0-9]{{1,2}})?|{_POSITIVE_CENTS_FRACTION}|10000000000(?:\.00?)?)$"
)
PERCENT_PATTERN = r"^(?:100(?:\.00?)?|[1-9]?[0-9](?:\.[0-9]{1,2})?)$"

# The request types: Decimal inside the service, documented and checked as described in decimal_input.
IncomeIn = Annotated[
    Decimal, *decimal_input(pattern=INCOME_PATTERN, number={"exclusiveMinimum": 0, "maximum": 10_000_000_000})
]
MoneyIn = Annotated[
    Decimal,
    *decimal_input(
        pattern=POSITIVE_MONEY_PATTERN, number={"exclusiveMinimum": 0, "maximum": float(MAX_MONEY)}
    ),
]
PercentIn = Annotated[Decimal, *decimal_input(pattern=PERCENT_PATTERN, number={"minimum": 0, "maximum": 100})]
