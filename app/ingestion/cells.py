"""Cell parsers: each takes a raw openpyxl value (and the workbook's date epoch) and returns the typed value
or raises `Invalid`, whose message is the reason the import report shows. Pure: no I/O.

They run once per cell of a million rows, so each checks the common type first.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from openpyxl.utils.datetime import from_excel

from app.credit.schedule import MAX_TENURE
from app.ingestion.workbook_limits import BadNumber

_BIGINT_MAX = 2**63 - 1
_INT_MAX = 2**31 - 1
_MONEY_LIMIT = Decimal(10) ** 12  # NUMERIC(14, 2)
_MONEY_INT_LIMIT = 10**12
_RATE_LIMIT = Decimal(1000)  # NUMERIC(5, 2)
_CENT = Decimal("0.01")
_RATE_CACHE_SIZE = 100_000
_rate_cache: dict[float, Decimal] = {}
_EXCEL_MAX_SERIAL = 2_958_465  # 9999-12-31
_NAME_MAX = 100
_NUMBER_TEXT_MAX = 40
"""Characters of a number written as text: more than any valid value needs (a BIGINT has 19 digits,
NUMERIC(14, 2) 15 and a dot), so Decimal never parses a megabyte of digits."""
_WHOLE_EXPONENT_MAX = 18
"""Decimal.adjusted() of the largest number we keep (2**63 - 1 ~ 9.2e18; money and rates are far below):
past it the number is too large, and int(Decimal("1E999999999")) would run for minutes building it."""
EXCEL_ERRORS = frozenset(
    ("#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA", "#SPILL!",
     "#CALC!", "#FIELD!", "#BLOCKED!", "#CONNECT!", "#BUSY!", "#UNKNOWN!", "#EXTERNAL!", "#PYTHON!")
)  # fmt: skip
"""A cell holding an error (`t="e"`, e.g. a formula's #DIV/0!) reads as its text."""


class Invalid(ValueError):
    """A cell's value cannot be used; the message is the reason shown in the report."""


def _missing() -> Invalid:
    return Invalid("missing value")


def _unusable(value: Any, reason: str) -> Invalid:
    """The reason a value of no type the parser takes is refused: a bad numeric cell says what it was."""
    if type(value) is BadNumber:
        return Invalid(value.reason)
    return Invalid(reason)


def _bad_text(text: str, reason: str) -> Invalid:
    if text in EXCEL_ERRORS:
        return Invalid(f"an Excel error value ({text})")
    return Invalid(reason)


def _number_text(value: str) -> str:
    """A number written as text, stripped of spaces and thousands separators; refused when empty or longer
    than any valid number (before Decimal spends time on it)."""
    text = value.strip().replace(",", "")
    if not text:
        raise _missing()
    if len(text) > _NUMBER_TEXT_MAX:
        raise Invalid(f"not a number (more than {_NUMBER_TEXT_MAX} characters)")
    return text


def _whole(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value
    if kind is float:
        if value.is_integer():
            return int(value)
        if value - value != 0.0:  # nan, inf
            raise Invalid("not a number")
        raise Invalid("not a whole number")
    if kind is str:
        text = _number_text(value)
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise _bad_text(text, "not a number") from None
        if not number.is_finite():
            raise Invalid("not a number")
        if number.adjusted() > _WHOLE_EXPONENT_MAX:
            raise Invalid("too large")
        if number != number.to_integral_value():
            raise Invalid("not a whole number")
        return int(number)
    if value is None:
        raise _missing()
    raise _unusable(value, "not a number")


def _decimal(value: Any) -> Decimal:
    kind = type(value)
    if kind is int:
        return Decimal(value)
    try:
        if kind is float:
            # Through str: Decimal(0.1) would carry the binary float's 55 digits of noise.
            number = Decimal(str(value))
        elif kind is str:
            text = _number_text(value)
            try:
                number = Decimal(text)
            except InvalidOperation:
                raise _bad_text(text, "not a number") from None
        elif value is None:
            raise _missing()
        else:
            raise _unusable(value, "not a number")
    except InvalidOperation:
        raise Invalid("not a number") from None
    if not number.is_finite():
        raise Invalid("not a number")
    if number.adjusted() > _WHOLE_EXPONENT_MAX:
        # Before any arithmetic: abs(Decimal("1E999999999")) overflows the context.
        raise Invalid("too large")
    return number


def _quantized(value: Any, limit: Decimal) -> Decimal:
    number = _decimal(value)
    if abs(number) >= limit:
        raise Invalid(f"too large (limit {limit:,})")
    if type(value) is int:
        return number  # already exact; NUMERIC(…, 2) stores it as .00
    return number.quantize(_CENT, rounding=ROUND_HALF_UP)


def money(value: Any) -> Decimal:
    """Money as an exact Decimal, half-up to 2 dp; never negative."""
    if type(value) is int and 0 <= value < _MONEY_INT_LIMIT:
        return Decimal(value)  # the export's usual case: whole rupees
    number = _quantized(value, _MONEY_LIMIT)
    if number < 0:
        raise Invalid("must not be negative")
    return number


def positive_money(value: Any) -> Decimal:
    number = money(value)
    if number == 0:
        raise Invalid("must be greater than zero")
    return number


def rate(value: Any) -> Decimal:
    if type(value) is float:
        # Rates repeat (a lender has a few hundred distinct ones): converting each once saves ~1 µs a row.
        cached = _rate_cache.get(value)
        if cached is not None:
            return cached
    number = _quantized(value, _RATE_LIMIT)
    if number < 0:
        raise Invalid("must not be negative")
    if type(value) is float and len(_rate_cache) < _RATE_CACHE_SIZE:
        _rate_cache[value] = number
    return number


def identifier(value: Any) -> int:
    if type(value) is int and 0 < value <= _BIGINT_MAX:  # the common cell, without a further call
        return value
    return _positive_whole(value, _BIGINT_MAX, "must be a positive whole number")


def positive_count(value: Any) -> int:
    if type(value) is int and 0 < value <= _INT_MAX:
        return value
    return _positive_whole(value, _INT_MAX, "must be greater than zero")


def _positive_whole(value: Any, limit: int, not_positive: str) -> int:
    number = _whole(value)
    if number <= 0:
        raise Invalid(not_positive)
    if number > limit:
        raise Invalid("too large")
    return number


def tenure(value: Any) -> int:
    """Months, 1..MAX_TENURE as the API takes them: every imported loan's schedule is stepped through, so a
    hostile tenure of two billion months would stall the reader."""
    months = positive_count(value)
    if months > MAX_TENURE:
        raise Invalid(f"more than {MAX_TENURE} months")
    return months


def count(value: Any) -> int:
    if type(value) is int and 0 <= value <= _INT_MAX:
        return value
    number = _whole(value)
    if number < 0:
        raise Invalid("must not be negative")
    if number > _INT_MAX:
        raise Invalid("too large")
    return number


def age(value: Any) -> int | None:
    if type(value) is int and 0 <= value <= 150:
        return value
    if value is None or (type(value) is str and not value.strip()):
        return None  # age is optional in the schema: unknown, not invalid
    number = _whole(value)
    if not 0 <= number <= 150:
        raise Invalid("must be between 0 and 150")
    return number


_PHONE_NOISE = re.compile(r"[\s\-().]")
_PHONE_MIN = 1_000_000_000  # the API's rule, ^[1-9][0-9]{9}$: ten digits, the first not 0
_PHONE_MAX = 9_999_999_999
_PHONE_TEXT_MAX = 40


def phone(value: Any) -> int:
    """A mobile number as the API takes it: ten digits, not starting with 0. A +91, 91 or 0 prefix is
    dropped when exactly ten digits remain (+91 98765 43210, 919876543210, 09876543210)."""
    kind = type(value)
    if kind is int and _PHONE_MIN <= value <= _PHONE_MAX:
        return value
    if kind is int:
        digits = str(value) if 0 < value < 10**13 else ""
    elif kind is float:
        if not value.is_integer() or not 0 < value < 1e13:
            raise _unusable(value, "not a phone number")
        digits = str(int(value))
    elif kind is str:
        if len(value) > _PHONE_TEXT_MAX:
            raise Invalid("not a phone number")
        text = _PHONE_NOISE.sub("", value)
        if not text:
            raise _missing()
        if text.startswith("+"):
            text = text[1:]
            if not text.startswith("91"):
                raise Invalid("not a phone number (only +91 numbers)")
        if not (text.isascii() and text.isdigit()):
            raise _bad_text(text, "not a phone number")
        digits = text
    elif value is None:
        raise _missing()
    else:
        raise _unusable(value, "not a phone number")
    if len(digits) == 12 and digits.startswith("91"):
        digits = digits[2:]
    elif len(digits) == 11 and digits.startswith("0"):
        digits = digits[1:]
    if len(digits) != 10 or digits[0] == "0":
        raise Invalid("not a phone number (ten digits, not starting with 0)")
    return int(digits)


def name(value: Any) -> str:
    if type(value) is str:
        text = value.strip()
        if text and len(text) <= _NAME_MAX and "\x00" not in text and text[0] != "#":
            return text
    elif type(value) is int:
        text = str(value)
    elif value is None:
        raise _missing()
    else:
        raise _unusable(value, "not text")
    if not text:
        raise _missing()
    if text in EXCEL_ERRORS:
        raise Invalid(f"an Excel error value ({text})")
    if len(text) > _NAME_MAX:
        raise Invalid(f"longer than {_NAME_MAX} characters")
    if "\x00" in text:
        raise Invalid("contains a NUL character")  # PostgreSQL text cannot hold one
    return text


def date(value: Any, epoch: dt.datetime) -> dt.date:
    """A date cell, an Excel serial number (a date column without date formatting) or an ISO string."""
    kind = type(value)
    if kind is dt.datetime:
        return value.date()
    if kind is dt.date:
        return value
    if kind is int or kind is float:
        if not 1 <= value < _EXCEL_MAX_SERIAL + 1:
            raise Invalid("not a date (serial number out of range)")
        return from_excel(value, epoch).date()
    if kind is str:
        text = value.strip()
        if not text:
            raise _missing()
        try:
            return dt.datetime.fromisoformat(text).date()
        except ValueError:
            raise _bad_text(text, "not a date (expected YYYY-MM-DD)") from None
    if value is None:
        raise _missing()
    raise _unusable(value, "not a date")
