"""Deterministic sample workbooks shaped like the lender's export.

Same seed and sizes -> the same cell values (openpyxl stamps the creation time into the file, so the
.xlsx bytes themselves differ). Rows are streamed through openpyxl's write-only mode: a million loans
need a few MB of memory, never a sheet held whole.

Loan rows are internally consistent (end = start + tenure months, EMIs paid on time <= tenure, monthly
payment from the EMI formula), customer phone numbers are unique, and a configurable share of Loan IDs
is reused under a different customer, as in the real export (29 of its 782 loans).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import shutil
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zipfile import ZIP_DEFLATED, ZipFile

from openpyxl import Workbook
from openpyxl.utils import get_column_letter

from app.credit.dates import add_months
from app.credit.policy import approved_limit_for, installment

CUSTOMER_HEADERS = (
    "Customer ID",
    "First Name",
    "Last Name",
    "Age",
    "Phone Number",
    "Monthly Salary",
    "Approved Limit",
)
LOAN_HEADERS = (
    "Customer ID",
    "Loan ID",
    "Loan Amount",
    "Tenure",
    "Interest Rate",
    "Monthly payment",
    "EMIs paid on Time",
    "Date of Approval",
    "End Date",
)
CUSTOMERS_FILE = "customer_data.xlsx"
LOANS_FILE = "loan_data.xlsx"
SHEET_NAME = "Sheet1"
# The real export: 29 of its 782 loans carry a Loan ID that another customer's loan already has.
DEFAULT_REPEAT_SHARE = 29 / 782

FIRST_NAMES = (
    "Aarav", "Aaron", "Abbey", "Aditi", "Alice", "Amara", "Ananya", "Arjun", "Bella", "Carlos", "Chen",
    "Daniel", "Deepa", "Diego", "Elena", "Farah", "Gabriel", "Hana", "Ibrahim", "Isha", "James", "Kavya",
    "Laura", "Liam", "Maya", "Mohammed", "Nadia", "Nikhil", "Olivia", "Priya", "Rahul", "Rosa", "Sara",
    "Tariq", "Uma", "Vikram", "Wei", "Yusuf", "Zara", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Garcia", "Gonzalez", "Rodrigues", "Fernandez", "Lopez", "Martinez", "Sanchez", "Perez", "Gomez",
    "Martin", "Sharma", "Patel", "Iyer", "Khan", "Singh", "Nair", "Reddy", "Das", "Kumar", "Mehta",
    "Smith", "Johnson", "Brown", "Wang", "Li", "Kim", "Nguyen", "Silva", "Costa", "Rossi",
)  # fmt: skip

FIRST_APPROVAL = dt.date(2010, 1, 1)
APPROVAL_DAYS = (dt.date(2023, 8, 31) - FIRST_APPROVAL).days
# Multiplying by a number coprime with the modulus permutes Z/m: unique values without remembering them.
_PHONE_SPACE = 4_000_000_000
_PHONE_MULTIPLIER = 2_654_435_761  # odd and not a multiple of 5, so coprime with 4e9 = 2^11 * 5^9
_FIRST_LOAN_ID = 1_000
_RUPEE = Decimal(1)

_HEAD_BYTES = 64 * 1024  # openpyxl's sheet header (before <sheetData>) is a few hundred bytes
_COPY_CHUNK = 1024 * 1024

Progress = Callable[[str, int], None]
"""Called with (file name, rows written so far) every PROGRESS_EVERY rows and once at the end."""
PROGRESS_EVERY = 10_000


@dataclass(frozen=True, slots=True)
class SampleFiles:
    customers: Path
    loans: Path


def monthly_installment(principal: Decimal, annual_rate_percent: Decimal, tenure_months: int) -> Decimal:
    """The policy's EMI, in whole rupees as the export has it."""
    return installment(principal, annual_rate_percent, tenure_months).quantize(_RUPEE, rounding=ROUND_HALF_UP)


def iter_customer_rows(count: int, seed: int) -> Iterator[tuple[object, ...]]:
    """Customer rows with Customer IDs 1..count, in CUSTOMER_HEADERS order."""
    rng = random.Random(f"customers:{seed}")
    phone_offset = rng.randrange(_PHONE_SPACE)
    for customer_id in range(1, count + 1):
        salary = rng.randrange(25, 300) * 1000
        yield (
            customer_id,
            rng.choice(FIRST_NAMES),
            rng.choice(LAST_NAMES),
            rng.randint(21, 70),
            6_000_000_000 + (customer_id * _PHONE_MULTIPLIER + phone_offset) % _PHONE_SPACE,
            salary,
            int(approved_limit_for(Decimal(salary))),
        )


def _coprime_multiplier(modulus: int, rng: random.Random) -> int:
    while True:
        candidate = rng.randrange(modulus // 3, modulus) | 1
        if math.gcd(candidate, modulus) == 1:
            return candidate


def iter_loan_rows(
    count: int, customers: int, seed: int, repeat_share: float = DEFAULT_REPEAT_SHARE
) -> Iterator[tuple[object, ...]]:
    """Loan rows in LOAN_HEADERS order, for customers 1..customers.

    Loan IDs are a scrambled permutation (unique, in no order, like the export's); a `repeat_share` of
    rows instead reuse an earlier row's Loan ID under a different customer. Each ID is reused at most
    once, so no (customer, Loan ID) pair ever repeats.
    """
    if customers < 1:
        raise ValueError("loans need at least one customer")
    rng = random.Random(f"loans:{seed}")
    id_space = max(count * 9, 9_000)
    multiplier, offset = _coprime_multiplier(id_space, rng), rng.randrange(id_space)
    loan_ids, holders = array("q"), array("q")  # 16 bytes a row: the generator stays small at 1M rows
    reused: set[int] = set()
    for index in range(count):
        customer_id = rng.randint(1, customers)
        loan_id = _FIRST_LOAN_ID + (index * multiplier + offset) % id_space
        if customers > 1 and index > 0 and rng.random() < repeat_share:
            earlier = rng.randrange(index)
            if loan_ids[earlier] not in reused:
                loan_id = loan_ids[earlier]
                reused.add(loan_id)
                # Any customer but the first holder.
                customer_id = (holders[earlier] + rng.randrange(customers - 1)) % customers + 1
        loan_ids.append(loan_id)
        holders.append(customer_id)
        yield _loan_row(rng, customer_id, loan_id)


def _loan_row(rng: random.Random, customer_id: int, loan_id: int) -> tuple[object, ...]:
    amount = rng.randrange(1, 11) * 100_000
    tenure = rng.randint(6, 180)
    rate = Decimal(rng.randrange(800, 1800)) / 100
    start = FIRST_APPROVAL + dt.timedelta(days=rng.randrange(APPROVAL_DAYS))
    return (
        customer_id,
        loan_id,
        amount,
        tenure,
        float(rate),  # the export stores rates as floats (8.2, 13.46)
        int(monthly_installment(Decimal(amount), rate, tenure)),
        rng.randint(tenure // 2, tenure),
        dt.datetime.combine(start, dt.time()),
        dt.datetime.combine(add_months(start, tenure), dt.time()),
    )


def write_workbook(
    path: Path,
    headers: tuple[str, ...],
    rows: Iterator[tuple[object, ...]],
    *,
    trailing_empty_rows: int = 0,
    progress: Progress | None = None,
) -> int:
    """Stream `rows` under `headers` into a one-sheet workbook; return the number of data rows."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(SHEET_NAME)
    sheet.append(headers)
    written = 0
    for written, row in enumerate(rows, start=1):
        sheet.append(row)
        if progress and written % PROGRESS_EVERY == 0:
            progress(path.name, written)
    # Exports often end with formatted but empty rows; readers must not mistake them for data.
    for _ in range(trailing_empty_rows):
        sheet.append([None] * len(headers))
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(path.name + ".part")
    workbook.save(draft)
    last_cell = f"{get_column_letter(len(headers))}{1 + written + trailing_empty_rows}"
    _copy_with_dimension(draft, path, f"A1:{last_cell}")
    draft.unlink()
    if progress:
        progress(path.name, written)
    return written


def _copy_with_dimension(source: Path, target: Path, ref: str) -> None:
    """Copy the workbook, giving each sheet the <dimension> element Excel writes and openpyxl's
    write-only mode leaves out. Without it, openpyxl's read-only loader scans a whole sheet once just
    to size it, so generated files would read slower than real exports and flatter every benchmark."""
    with ZipFile(source) as zin, ZipFile(target, "w", ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            with zin.open(item) as src, zout.open(item.filename, "w", force_zip64=True) as dst:
                if item.filename.startswith("xl/worksheets/sheet"):
                    head = src.read(_HEAD_BYTES)
                    anchor = head.find(b"<sheetViews")
                    anchor = anchor if anchor >= 0 else head.find(b"<sheetData")
                    head = head[:anchor] + f'<dimension ref="{ref}"/>'.encode() + head[anchor:]
                    dst.write(head)
                shutil.copyfileobj(src, dst, _COPY_CHUNK)


def generate(
    directory: Path,
    *,
    customers: int = 300,
    loans: int = 782,
    seed: int = 0,
    repeat_share: float = DEFAULT_REPEAT_SHARE,
    progress: Progress | None = None,
) -> SampleFiles:
    """Write customer_data.xlsx and loan_data.xlsx into `directory`."""
    files = SampleFiles(directory / CUSTOMERS_FILE, directory / LOANS_FILE)
    write_workbook(files.customers, CUSTOMER_HEADERS, iter_customer_rows(customers, seed), progress=progress)
    write_workbook(
        files.loans, LOAN_HEADERS, iter_loan_rows(loans, customers, seed, repeat_share), progress=progress
    )
    return files
