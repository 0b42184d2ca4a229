"""Streamed, header-normalised, validated rows from the lender's workbooks.

openpyxl reads in read-only mode, row by row: a sheet is never loaded whole and never sized by its
recorded dimension (exports often carry a wrong one, and trailing formatted-but-empty rows). Headers are
matched by normalised name, so `Customer ID`, `Customer Id` and `customer_id` are one column. Every row
becomes either a typed tuple ready for COPY or one or more `RowError`s naming sheet, row, column and reason.

Parsing is CPU-bound: the job runs it in a child process (`python -m app.ingestion.reader`, see the end of
this module), which streams COPY-ready batches to the worker over a pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import json
import os
import re
import resource
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NamedTuple, Self
from xml.etree import ElementTree
from xml.etree.ElementTree import XMLPullParser

from openpyxl import load_workbook
from openpyxl.utils.datetime import from_excel
from openpyxl.worksheet import _reader as _openpyxl_sheet_parser
from openpyxl.xml.constants import SHEET_MAIN_NS

from app.credit.policy import POLICY, Policy, approved_limit_for
from app.credit.schedule import MAX_TENURE, imported_servicing
from app.ingestion import workbook_limits
from app.ingestion.workbook_limits import (
    EXCEL_MAX_COLUMNS,
    BadNumber,
    LimitExceeded,
    Limits,
    TextRunGuard,
    part_name,
    row_too_wide,
)

MAX_REPORTED_ERRORS = 100
"""Row errors kept in full; beyond this the report only counts them."""

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


class Invalid(ValueError):
    """A cell's value cannot be used; the message is the reason shown in the report."""


# --------------------------------------------------------------------------------------------------
# Cell parsers: each takes a raw openpyxl value (and the workbook's date epoch) and returns the typed
# value or raises Invalid. The common type is checked first: they run once per cell of a million rows.


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
    if type(value) is int and 0 < value <= _BIGINT_MAX:
        return value
    number = _whole(value)
    if number <= 0:
        raise Invalid("must be a positive whole number")
    if number > _BIGINT_MAX:
        raise Invalid("too large")
    return number


def positive_count(value: Any) -> int:
    if type(value) is int and 0 < value <= _INT_MAX:
        return value
    number = _whole(value)
    if number <= 0:
        raise Invalid("must be greater than zero")
    if number > _INT_MAX:
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


# --------------------------------------------------------------------------------------------------
# The sheet reader.

_ROW_TAG = f"{{{SHEET_MAIN_NS}}}row"
_SHEET_DATA_TAG = f"{{{SHEET_MAIN_NS}}}sheetData"


def _lean_iterparse(source: Any, events: Any = None, parser: Any = None) -> Iterator[tuple[str, Any]]:
    """ElementTree's iterparse (end events) that also empties <sheetData> as it goes, and bounds what one
    row or one text may make it hold.

    openpyxl's read-only parser clears every row once read but leaves the empty element attached to its
    parent: ~85 bytes a row, 85 MB per million rows, so memory grew with the file. Here, after each chunk
    of XML, <sheetData> lets go of its rows: those openpyxl has read are done with, and the one still
    being parsed lives on in the parser's stack. Start events are only needed to catch <sheetData>; they
    are switched off right after it, as one per cell would cost ~10% more parse time.

    Per chunk, not per event (so at no measurable cost): a row still being parsed with more cells than
    Excel's 16,384 columns, or a text run longer than a cell's 32,767 characters can take in XML
    (`TextRunGuard`), fails the part before it is held whole.
    """
    pull: Any = XMLPullParser(events=("start", "end"))  # typeshed types its events too loosely
    sheet_data = None
    pending = None  # the last row met: possibly still being parsed, its cells growing
    pull_has_starts = True
    opened = not hasattr(source, "read")
    stream = open(source, "rb") if opened else source  # noqa: SIM115 - closed in finally
    guard = TextRunGuard(part_name(source))
    try:
        while True:
            if sheet_data is not None and not pull_has_starts:
                yield from pull.read_events()  # the fast path: no per-event work of ours
            else:
                for event, element in pull.read_events():
                    if event == "end":
                        yield event, element
                    elif sheet_data is None and element.tag == _SHEET_DATA_TAG:
                        sheet_data = element
                        pull_has_starts = not _end_events_only(pull)
            if sheet_data is not None:
                if sheet_data:
                    pending = sheet_data[-1]
                    del sheet_data[:]
                if pending is not None and len(pending) > EXCEL_MAX_COLUMNS:
                    raise row_too_wide(guard.part, pending.get("r", "?"), len(pending))
            data = stream.read(workbook_limits.CHUNK_BYTES)
            if not data:
                break
            pull.feed(data)
            guard.fed(pull, len(data), pending)
        pull.close()
        yield from ((event, element) for event, element in pull.read_events() if event == "end")
    finally:
        if opened:
            stream.close()


def _end_events_only(pull: XMLPullParser) -> bool:
    """Stop reporting start events (CPython's parsers, C or Python, support this); False if not possible."""
    set_events = getattr(pull._parser, "_setevents", None)  # type: ignore[attr-defined]
    if set_events is None:
        return False
    set_events(pull._events_queue, ("end",))  # type: ignore[attr-defined]
    return True


_lean_iterparse.detaches_rows = True  # type: ignore[attr-defined]


def detach_finished_rows() -> None:
    """Give openpyxl's worksheet parser `_lean_iterparse` (idempotent). Not when openpyxl chose lxml or
    defusedxml: their parsers are theirs to keep."""
    if _openpyxl_sheet_parser.iterparse is ElementTree.iterparse:
        _openpyxl_sheet_parser.iterparse = _lean_iterparse


def install_bounds(limits: Limits) -> None:
    """`_lean_iterparse` and the workbook bounds (`workbook_limits.install`) into openpyxl; idempotent."""
    detach_finished_rows()
    workbook_limits.install(limits)


@dataclass(frozen=True, slots=True)
class Column:
    field: Field
    index: int  # 0-based position in the sheet row
    header: str  # as written in the file, for error messages


@dataclass(slots=True)
class Batch:
    """Up to `batch_rows` valid rows, with the errors met while reading them."""

    rows: list[Any]  # CustomerRow or LoanRow
    errors: list[RowError]  # only until MAX_REPORTED_ERRORS were reported for the sheet
    rows_read: int  # non-empty data rows read so far in this sheet (cumulative)
    skipped: int  # rows of this batch skipped for errors
    error_count: int  # errors found in this batch, reported in full or not


@dataclass(slots=True)
class SheetHeader:
    """What the header row said; plain data, so it crosses a process boundary as JSON."""

    sheet: str
    header_row: int
    headers: dict[str, str]  # field name -> column header as written in the file
    ignored: list[str]  # columns present but unused, e.g. `current_debt`
    derived: list[str]  # optional fields the file lacks and that are computed (approved_limit)


def _map_header(
    sheet: str, path: Path, schema: Schema, cells: tuple[Any, ...]
) -> tuple[list[Column], list[str]]:
    by_key = {key: f for f in schema.fields for key in f.keys}
    found: dict[str, Column] = {}
    ignored: list[str] = []
    for index, cell in enumerate(cells):
        if cell is None or not str(cell).strip():
            continue
        header = str(cell).strip()
        match = by_key.get(normalise_header(header))
        if match is None:
            ignored.append(header)  # e.g. `current_debt`: some exports carry it, nothing uses it
        elif match.name in found:
            raise WorkbookError(
                f"{path.name}: sheet {sheet!r} has two columns for {match.label}: "
                f"{found[match.name].header!r} and {header!r}"
            )
        else:
            found[match.name] = Column(match, index, header)
    missing = [f for f in schema.fields if f.required and f.name not in found]
    if missing:
        names = "; ".join(
            f"{f.label!r}" + (f" (or {', '.join(repr(a) for a in f.aliases)})" if f.aliases else "")
            for f in missing
        )
        raise WorkbookError(f"{path.name}: sheet {sheet!r} is missing the required column(s) {names}")
    return sorted(found.values(), key=lambda column: column.index), ignored


def _date_parser(epoch: dt.datetime) -> Callable[[Any], dt.date]:
    """`date` bound to the workbook's epoch (1900, or 1904 for old Mac files), date cells first."""

    def parse(value: Any) -> dt.date:
        if type(value) is dt.datetime:
            return value.date()
        return date(value, epoch)

    return parse


def _absent(_: Any) -> None:
    return None


def _is_empty(cells: tuple[Any, ...]) -> bool:
    return all(cell is None or (type(cell) is str and not cell.strip()) for cell in cells)


def _printable(value: Any) -> str | None:
    if value is None:
        return None
    text = value.isoformat() if isinstance(value, dt.date) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


class SheetReader:
    """The first visible worksheet of one workbook, read as typed rows. Use as a context manager."""

    def __init__(
        self, path: Path, schema: Schema, limits: Limits | None = None, policy: Policy = POLICY
    ) -> None:
        self.path = path
        self.schema = schema
        self.policy = policy
        self.sheet = ""
        self.part = ""
        limits = limits or Limits()
        install_bounds(limits)
        try:
            workbook_limits.check_archive(path, limits)  # before openpyxl inflates anything
            self._workbook = load_workbook(path, read_only=True, data_only=True)
        except FileNotFoundError:
            raise WorkbookError(f"{path}: no such file") from None
        except LimitExceeded as exc:
            raise WorkbookError(f"{path.name}: refused: {exc}") from None
        except MemoryError:
            raise
        except Exception as exc:  # openpyxl raises a zoo of types for non-xlsx content
            raise WorkbookError(
                f"{path.name}: not a readable .xlsx workbook ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            # Wrapped once and kept: closing a wrapper generator would close openpyxl's row iterator too.
            self._rows = self._guarded(self._open_first_sheet())
            self._columns, self.header = self._read_header()
        except BaseException:
            self.close()
            raise

    def _open_first_sheet(self) -> Iterator[tuple[Any, ...]]:
        sheets = self._workbook.worksheets
        if not sheets:
            raise WorkbookError(f"{self.path.name}: the workbook has no worksheet")
        # A hidden (or veryHidden) sheet is not what the user sees first: often a lookup table.
        sheet = next((s for s in sheets if s.sheet_state == "visible"), None)
        if sheet is None:
            raise WorkbookError(f"{self.path.name}: the workbook has no visible worksheet")
        self.sheet = sheet.title
        self.part = getattr(sheet, "_worksheet_path", "")
        # Ignore the recorded dimension: it may be missing or wrong. Rows come back unpadded instead.
        sheet.reset_dimensions()
        return sheet.iter_rows(values_only=True)

    def _read_header(self) -> tuple[list[Column], SheetHeader]:
        for row_number, cells in enumerate(self._rows, start=1):
            if _is_empty(cells):
                continue
            columns, ignored = _map_header(self.sheet, self.path, self.schema, cells)
            headers = {column.field.name: column.header for column in columns}
            derived = [name for name in self.schema.derived if name not in headers]
            return columns, SheetHeader(self.sheet, row_number, headers, ignored, derived)
        raise WorkbookError(f"{self.path.name}: sheet {self.sheet!r} is empty (no header row)")

    def _guarded(self, rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """Turn a damaged sheet discovered mid-stream into a WorkbookError naming the file."""
        try:
            yield from rows
        except LimitExceeded as exc:
            reason = str(exc) if self.part in str(exc) else f"{self.part}: {exc}"
            raise WorkbookError(f"{self.path.name}: sheet {self.sheet!r} refused: {reason}") from None
        except MemoryError:
            raise
        except Exception as exc:
            raise WorkbookError(
                f"{self.path.name}: damaged sheet {self.sheet!r} ({type(exc).__name__}: {exc})"
            ) from exc

    def close(self) -> None:
        self._workbook.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def batches(self, batch_rows: int) -> Iterator[Batch]:
        """Valid rows in batches of `batch_rows`; the last batch may be short (or empty, with only errors)."""
        header, make_row = self.header, self.schema.row_type._make
        plan = self._plan()
        cross_checks = self.schema.cross_checks
        derived = [(name, self.schema.derived[name]) for name in header.derived]
        width = max(c.index for c in self._columns) + 1

        batch = Batch([], [], 0, 0, 0)
        reported = 0
        row_number = header.header_row
        for cells in self._rows:
            row_number += 1
            if len(cells) < width:  # short rows, and the [] openpyxl yields for rows missing from the XML
                cells = (*cells, *(None,) * (width - len(cells)))
            first = cells[0]
            if (first is None or type(first) is str) and _is_empty(cells):
                continue  # blank rows, typically the export's trailing formatted-but-empty ones
            batch.rows_read += 1
            try:
                # The hot path, once per row of a million: every cell parses, no bookkeeping.
                row = make_row((row_number, *[parse(cells[index]) for index, parse, _ in plan]))
                errors = None
                for check in cross_checks:
                    if check(row):
                        errors = self._errors(row_number, cells, plan)
                        break
            except Invalid:
                errors = self._errors(row_number, cells, plan)
            if errors:
                batch.skipped += 1
                batch.error_count += len(errors)
                if reported < MAX_REPORTED_ERRORS:
                    batch.errors.extend(errors[: MAX_REPORTED_ERRORS - reported])
                    reported += len(errors)
                continue
            for name, compute in derived:
                row = row._replace(**{name: compute(row, self.policy)})
            batch.rows.append(row)
            if len(batch.rows) >= batch_rows:
                yield batch
                batch = Batch([], [], batch.rows_read, 0, 0)
        yield batch

    def _plan(self) -> list[tuple[int, Callable[[Any], Any], str]]:
        """(cell index, parser, header as written) per output field, in row order."""
        by_name = {c.field.name: c for c in self._columns}
        plan: list[tuple[int, Callable[[Any], Any], str]] = []
        for f in self.schema.fields:
            column = by_name.get(f.name)
            if column is None:  # an optional column the file lacks: NULL, or derived after parsing
                plan.append((0, _absent, f.label))
            else:
                parse = _date_parser(self._workbook.epoch) if f.needs_epoch else f.parse
                plan.append((column.index, parse, column.header))
        return plan

    def _errors(
        self, row_number: int, cells: tuple[Any, ...], plan: list[tuple[int, Callable[[Any], Any], str]]
    ) -> list[RowError]:
        """Every problem of a bad row, not just the first: the slow path, taken only for bad rows."""
        errors: list[RowError] = []
        values: list[Any] = [row_number]
        for index, parse, header in plan:
            try:
                values.append(parse(cells[index]))
            except Invalid as exc:
                values.append(None)
                errors.append(RowError(self.sheet, row_number, header, str(exc), _printable(cells[index])))
        if errors:
            return errors
        row = self.schema.row_type._make(values)
        headers = self.header.headers
        for check in self.schema.cross_checks:
            problem = check(row)
            if problem:
                column, reason = problem
                errors.append(
                    RowError(
                        self.sheet, row_number, headers[column], reason, _printable(getattr(row, column))
                    )
                )
        return errors


# --------------------------------------------------------------------------------------------------
# Reading in a child process (`python -m app.ingestion.reader`).
#
# openpyxl's parsing is pure Python: in the worker's process it would hold the GIL the event loop and the
# COPY writer need, and the whole load would take parse time + write time. In a child process it runs on
# its own core while the worker writes the previous batch. The child writes frames to its stdout: a
# 4-byte meta length, a 4-byte payload length, JSON meta, payload (the batch's rows as CSV for COPY).
# A full pipe blocks the child: that is the bounded queue between the two.

SCHEMAS: dict[str, Schema] = {"customers": CUSTOMERS, "loans": LOANS}
_FRAME = struct.Struct("!II")


def with_servicing(row: LoanRow) -> tuple[Any, ...]:
    """A valid loan row as staged: its columns, then the servicing state an import gives it (issue #11;
    app.credit.schedule.imported_servicing). Computed here, in the reader's process, beside the parsing."""
    servicing = imported_servicing(
        row.loan_amount,
        row.interest_rate,
        row.tenure,
        row.start_date,
        row.monthly_installment,
        row.emis_paid_on_time,
    )
    return (
        *row,
        servicing.outstanding,
        servicing.installments_paid,
        servicing.amount_paid,
        servicing.repayments_left,
        servicing.paid_off_on,
    )


def staged_rows(kind: str, rows: list[Any]) -> list[Any]:
    return [with_servicing(row) for row in rows] if kind == "loans" else rows


def rows_to_csv(rows: list[Any]) -> bytes:
    """Rows as CSV in COPY's dialect: None -> empty (NULL), Decimals and dates as their exact text."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def write_frame(out: BinaryIO, meta: dict[str, Any], payload: bytes = b"") -> None:
    encoded = json.dumps(meta).encode()
    out.write(_FRAME.pack(len(encoded), len(payload)) + encoded)
    out.write(payload)
    out.flush()


async def read_frame(stream: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """The next frame; asyncio.IncompleteReadError when the child stopped mid-way (it died)."""
    meta_size, payload_size = _FRAME.unpack(await stream.readexactly(_FRAME.size))
    meta = json.loads(await stream.readexactly(meta_size))
    payload = await stream.readexactly(payload_size) if payload_size else b""
    return meta, payload


def batch_meta(kind: str, batch: Batch) -> dict[str, Any]:
    return {
        "type": "batch",
        "file": kind,
        "rows": len(batch.rows),
        "rows_read": batch.rows_read,
        "skipped": batch.skipped,
        "error_count": batch.error_count,
        "errors": [list(error) for error in batch.errors],
        # The loader moves the loan id sequence past every workbook Loan ID; it needs the largest.
        "max_loan_id": max((row.source_loan_id for row in batch.rows), default=0) if kind == "loans" else 0,
    }


def stream_workbooks(
    out: BinaryIO,
    files: list[tuple[str, Path]],
    batch_rows: int,
    limits: Limits | None = None,
    memory_mb: int | None = None,
    policy: Policy = POLICY,
) -> None:
    """Open every file and send all headers first (so the job fails before writing anything when one
    is unreadable or lacks a column), then each file's batches in order, each file closed by `end`.
    A file that cannot be read ends the stream with an `error` frame; `memory_mb` is the address-space
    limit the caller set, named when it is what stopped the reader."""
    readers: list[tuple[str, SheetReader]] = []
    try:
        for kind, path in files:
            readers.append((kind, SheetReader(path, SCHEMAS[kind], limits, policy)))
        write_frame(out, {"type": "headers", "files": {kind: asdict(r.header) for kind, r in readers}})
        for kind, reader in readers:
            for batch in reader.batches(batch_rows):
                write_frame(out, batch_meta(kind, batch), rows_to_csv(staged_rows(kind, batch.rows)))
            write_frame(out, {"type": "end", "file": kind, "peak_rss_kb": peak_rss_kb()})
    except WorkbookError as exc:
        write_frame(out, error_meta(str(exc)))
    except MemoryError:
        readers_now = ", ".join(str(path.name) for _, path in files)
        limit = f" under its {memory_mb:,} MB address-space limit" if memory_mb else ""
        write_frame(
            out,
            error_meta(
                f"the workbook reader ran out of memory{limit} reading {readers_now} "
                "(ingestion_reader_memory_mb)"
            ),
        )
    finally:
        for _, reader in readers:
            reader.close()


def error_meta(message: str) -> dict[str, Any]:
    return {"type": "error", "message": message, "peak_rss_kb": peak_rss_kb()}


def peak_rss_kb() -> int:
    """This process's peak RSS. VmHWM where there is /proc: ru_maxrss of a forked-then-exec'd child
    starts at its parent's peak, which says nothing about the child."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS


def limit_address_space(memory_mb: int) -> None:
    """RLIMIT_AS for this process: the last line of defence, should a file get past every bound, is a
    MemoryError (reported as such) rather than the host's OOM killer. 0 = no limit."""
    if memory_mb <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = memory_mb * workbook_limits.MB
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stream workbooks as COPY-ready frames on stdout.")
    parser.add_argument("--batch-rows", type=int, default=5_000)
    parser.add_argument(
        "--max-part-mb",
        type=int,
        default=workbook_limits.DEFAULT_MAX_PART_MB,
        help="largest uncompressed size of one part of the .xlsx zip (a worksheet)",
    )
    parser.add_argument(
        "--max-shared-strings-mb",
        type=int,
        default=workbook_limits.DEFAULT_MAX_SHARED_STRINGS_MB,
        help="largest uncompressed size of the shared strings part",
    )
    parser.add_argument(
        "--max-shared-strings",
        type=int,
        default=workbook_limits.DEFAULT_MAX_SHARED_STRINGS,
        help="most shared strings (openpyxl holds them all in memory)",
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=workbook_limits.DEFAULT_READER_MEMORY_MB,
        help="address-space limit (RLIMIT_AS) of this process in MB; 0 = none",
    )
    parser.add_argument("--limit-multiplier", type=int, default=POLICY.limit_income_multiplier)
    parser.add_argument("--limit-rounding-unit", type=Decimal, default=POLICY.limit_rounding_unit)
    parser.add_argument("files", nargs="+", metavar="KIND=PATH", help="customers=PATH and/or loans=PATH")
    args = parser.parse_args(argv)
    files = [(kind, Path(path)) for kind, _, path in (item.partition("=") for item in args.files)]
    limits = Limits(args.max_part_mb, args.max_shared_strings_mb, args.max_shared_strings)
    # The protocol owns fd 1; anything else printing goes to stderr instead of corrupting a frame.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr
    # int() of a numeric cell with thousands of digits is quadratic; 640 (the least Python allows) is
    # far more than any valid number and bounds each conversion to microseconds.
    sys.set_int_max_str_digits(640)
    limit_address_space(args.memory_mb)
    try:
        policy = replace(
            POLICY,
            limit_income_multiplier=args.limit_multiplier,
            limit_rounding_unit=args.limit_rounding_unit,
        )
        stream_workbooks(out, files, args.batch_rows, limits, args.memory_mb, policy)
    except BaseException as exc:
        write_frame(out, error_meta(f"reader crashed: {type(exc).__name__}: {exc}"))
        raise
    finally:
        out.close()


if __name__ == "__main__":
    main()
