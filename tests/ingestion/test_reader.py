"""The reader on its own: header aliases, typed values, row errors, and the frames it sends the worker."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import time
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook
from openpyxl.utils.datetime import CALENDAR_MAC_1904, WINDOWS_EPOCH

from app.ingestion import cells, sheet, workbook_limits
from app.ingestion.reader import read_frame, rows_to_csv, stream_workbooks
from app.ingestion.rows import CUSTOMERS, LOANS, MAX_REPORTED_ERRORS, CustomerRow, LoanRow, WorkbookError
from app.ingestion.sheet import SheetReader, _lean_iterparse
from app.sample_data import write_workbook
from tests.ingestion.conftest import CUSTOMER_HEADERS, LOAN_HEADERS, customer, loan, write_xlsx


def read_all(path: Path, schema: Any = LOANS, batch_rows: int = 1000) -> tuple[list[Any], list[Any], Any]:
    with SheetReader(path, schema) as reader:
        batches = list(reader.batches(batch_rows))
        header = reader.header
    rows = [row for batch in batches for row in batch.rows]
    errors = [error for batch in batches for error in batch.errors]
    return rows, errors, (header, batches)


def test_a_loan_row_becomes_typed_values(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [loan(3, 1001, **{"Interest Rate": 8.2})])
    rows, errors, _ = read_all(path)
    assert errors == []
    assert rows == [
        LoanRow(
            row_number=2,
            customer_id=3,
            source_loan_id=1001,
            loan_amount=Decimal(100_000),
            tenure=12,
            interest_rate=Decimal("8.20"),
            monthly_installment=Decimal(8_908),
            emis_paid_on_time=10,
            start_date=dt.date(2020, 1, 15),
            end_date=dt.date(2021, 1, 15),
        )
    ]
    assert all(not isinstance(value, float) for value in rows[0])


def test_money_from_floats_is_exact_and_rounded_half_up(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "l.xlsx",
        LOAN_HEADERS,
        [loan(1, 1, **{"Loan Amount": 1234.565, "Interest Rate": 13.455, "Monthly payment": 0.1 + 0.2})],
    )
    (row,), _, _ = read_all(path)
    assert row.loan_amount == Decimal("1234.57")
    assert row.interest_rate == Decimal("13.46")
    assert row.monthly_installment == Decimal("0.30")
    assert str(row.monthly_installment) == "0.30"


@pytest.mark.parametrize(
    ("renames", "extra"),
    [
        ({}, None),
        ({"Customer ID": "Customer Id"}, None),
        ({"Customer ID": "customer_id", "Loan ID": "loan_id"}, None),
        ({"Date of Approval": "start_date", "End Date": "end_date"}, None),
        ({"Monthly payment": "monthly_repayment"}, "current_debt"),
        ({"Customer ID": "  CUSTOMER-ID ", "EMIs paid on Time": "emis_paid_on_time"}, "Remarks"),
    ],
)
def test_header_variants_read_the_same(tmp_path: Path, renames: dict[str, str], extra: str | None) -> None:
    headers = [renames.get(h, h) for h in LOAN_HEADERS]
    values = [loan(7, 77)]
    if extra:
        headers.insert(3, extra)
        values = [[*v[:3], 123_456, *v[3:]] for v in values]
    path = write_xlsx(tmp_path / "l.xlsx", headers, values)
    rows, errors, (header, _) = read_all(path)
    expected, _, _ = read_all(write_xlsx(tmp_path / "plain.xlsx", LOAN_HEADERS, [loan(7, 77)]))
    assert errors == []
    assert rows == expected
    assert header.ignored == ([extra] if extra else [])
    assert header.headers["customer_id"] == headers[0].strip()


def test_columns_in_any_order(tmp_path: Path) -> None:
    order = list(reversed(CUSTOMER_HEADERS))
    path = write_xlsx(tmp_path / "c.xlsx", order, [list(reversed(customer(5)))])
    rows, errors, _ = read_all(path, CUSTOMERS)
    assert errors == []
    assert rows[0].customer_id == 5 and rows[0].phone_number == 9_000_000_005


def test_serial_number_dates_and_iso_text(tmp_path: Path) -> None:
    # 43845 is 2020-01-15 in Excel's 1900 system: what a date column without date formatting holds.
    path = write_xlsx(
        tmp_path / "l.xlsx",
        LOAN_HEADERS,
        [
            loan(1, 1, **{"Date of Approval": 43845, "End Date": 44211.0}),
            loan(1, 2, **{"Date of Approval": "2020-01-15", "End Date": "2021-01-15T00:00:00"}),
        ],
    )
    rows, errors, _ = read_all(path)
    assert errors == []
    assert [(r.start_date, r.end_date) for r in rows] == [(dt.date(2020, 1, 15), dt.date(2021, 1, 15))] * 2


def test_serial_dates_follow_the_workbooks_1904_epoch(tmp_path: Path) -> None:
    workbook = Workbook()
    workbook.epoch = CALENDAR_MAC_1904
    sheet = workbook.active
    assert sheet is not None
    sheet.append(list(LOAN_HEADERS))
    sheet.append(loan(1, 1, **{"Date of Approval": 42383, "End Date": 42749}))  # 1904 system
    workbook.save(tmp_path / "mac.xlsx")
    (row,), errors, _ = read_all(tmp_path / "mac.xlsx")
    assert errors == []
    assert (row.start_date, row.end_date) == (dt.date(2020, 1, 15), dt.date(2021, 1, 15))


def test_trailing_and_inner_empty_rows_are_not_data(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "l.xlsx",
        LOAN_HEADERS,
        [loan(1, 1), [None] * 9, ["", " ", None, None, None, None, None, None, None], loan(1, 2)],
        trailing_empty_rows=25,
    )
    rows, errors, (_, batches) = read_all(path)
    assert errors == []
    assert [(r.row_number, r.source_loan_id) for r in rows] == [(2, 1), (5, 2)]
    assert batches[-1].rows_read == 2


def test_a_missing_or_wrong_dimension_does_not_limit_reading(tmp_path: Path) -> None:
    # openpyxl's write-only mode records no dimension; many exporters record a wrong one.
    path = tmp_path / "nodim.xlsx"
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Sheet1")
    sheet.append(list(LOAN_HEADERS))
    for index in range(1, 31):
        sheet.append(loan(1, index))
    workbook.save(path)
    rows, _, _ = read_all(path)
    assert len(rows) == 30
    wrong = tmp_path / "wrongdim.xlsx"
    write_workbook(wrong, LOAN_HEADERS, iter([tuple(loan(1, i)) for i in range(1, 31)]))
    _rewrite_member(
        wrong, "xl/worksheets/sheet1.xml", b'<dimension ref="A1:I31"/>', b'<dimension ref="A1:B2"/>'
    )
    rows, _, _ = read_all(wrong)
    assert len(rows) == 30


def _rewrite_member(path: Path, member: str, old: bytes, new: bytes) -> None:
    with zipfile.ZipFile(path) as archive:
        contents = {item.filename: archive.read(item.filename) for item in archive.infolist()}
    assert old in contents[member]
    contents[member] = contents[member].replace(old, new)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


BAD_LOANS = [
    (loan(1, 10, **{"Loan Amount": None}), "Loan Amount", "missing value"),
    (loan(1, 11, **{"Loan Amount": "abc"}), "Loan Amount", "not a number"),
    (loan(1, 12, **{"Loan Amount": -5}), "Loan Amount", "must not be negative"),
    (loan(1, 13, **{"Loan Amount": 0}), "Loan Amount", "must be greater than zero"),
    (loan(1, 14, **{"Tenure": 12.5}), "Tenure", "not a whole number"),
    (loan(1, 15, **{"Interest Rate": -1}), "Interest Rate", "must not be negative"),
    (loan(1, 16, **{"Monthly payment": "n/a"}), "Monthly payment", "not a number"),
    (
        loan(1, 17, **{"EMIs paid on Time": 13}),
        "EMIs paid on Time",
        "EMIs paid on time (13) exceed the tenure (12)",
    ),
    (
        loan(1, 18, **{"End Date": dt.datetime(2019, 1, 1)}),
        "End Date",
        "end date 2019-01-01 is before the start date 2020-01-15",
    ),
    (
        loan(1, 19, **{"Date of Approval": "15/01/2020"}),
        "Date of Approval",
        "not a date (expected YYYY-MM-DD)",
    ),
    (loan(None, 20), "Customer ID", "missing value"),  # type: ignore[arg-type]
    (loan(-3, 21), "Customer ID", "must be a positive whole number"),
    (loan(1, 22, **{"Loan Amount": 10**13}), "Loan Amount", "too large (limit 1,000,000,000,000)"),
]


def test_every_bad_row_is_reported_with_sheet_row_column_reason_and_good_rows_still_come(
    tmp_path: Path,
) -> None:
    good_before, good_after = loan(1, 1), loan(1, 2)
    path = write_xlsx(
        tmp_path / "l.xlsx",
        LOAN_HEADERS,
        [good_before, *(row for row, _, _ in BAD_LOANS), good_after],
        sheet="Loans",
    )
    rows, errors, (_, batches) = read_all(path, batch_rows=3)
    assert [r.source_loan_id for r in rows] == [1, 2]
    assert [(e.sheet, e.row, e.column, e.reason) for e in errors] == [
        ("Loans", index + 3, column, reason) for index, (_, column, reason) in enumerate(BAD_LOANS)
    ]
    assert errors[1].value == "abc"
    assert errors[0].value is None
    assert sum(b.skipped for b in batches) == len(BAD_LOANS)
    assert batches[-1].rows_read == len(BAD_LOANS) + 2


def test_a_row_with_several_problems_reports_each(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(1, **{"Age": 200, "Phone Number": "x1"})]
    )
    rows, errors, _ = read_all(path, CUSTOMERS)
    assert rows == []
    assert [(e.column, e.reason) for e in errors] == [
        ("Age", "must be between 0 and 150"),
        ("Phone Number", "not a phone number"),
    ]


def test_customer_values(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "c.xlsx",
        CUSTOMER_HEADERS,
        [
            customer(1, **{"First Name": "  Ana ", "Phone Number": "+91 98765-43210"}),
            customer(2, **{"Age": None}),
            customer(3, **{"First Name": "x" * 101}),
        ],
    )
    rows, errors, _ = read_all(path, CUSTOMERS)
    assert rows[0] == CustomerRow(
        2, 1, "Ana", "Last1", 31, 9_876_543_210, Decimal(50_000), Decimal(1_800_000)
    )
    assert rows[1].age is None
    assert [(e.row, e.column, e.reason) for e in errors] == [(4, "First Name", "longer than 100 characters")]


def test_approved_limit_is_computed_only_when_the_column_is_absent(tmp_path: Path) -> None:
    headers = [h for h in CUSTOMER_HEADERS if h not in ("Approved Limit", "Age")]
    path = write_xlsx(
        tmp_path / "c.xlsx",
        headers,
        [[1, "A", "B", 9_000_000_001, 62_500], [2, "C", "D", 9_000_000_002, 51_000]],
    )
    rows, errors, (header, _) = read_all(path, CUSTOMERS)
    assert errors == []
    assert header.derived == ["approved_limit"]
    # 36 x salary to the nearest lakh, half-up: 22.5 lakh -> 23 lakh; 18.36 lakh -> 18 lakh.
    assert [(r.approved_limit, r.age) for r in rows] == [
        (Decimal(2_300_000), None),
        (Decimal(1_800_000), None),
    ]
    given, _, (given_header, _) = read_all(
        write_xlsx(tmp_path / "given.xlsx", CUSTOMER_HEADERS, [customer(1, **{"Approved Limit": 123})]),
        CUSTOMERS,
    )
    assert given[0].approved_limit == Decimal(123)
    assert given_header.derived == []


def test_errors_are_listed_up_to_the_cap_then_counted(tmp_path: Path) -> None:
    bad = [loan(1, i, Tenure="x") for i in range(1, 151)]
    path = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, bad)
    _, errors, (_, batches) = read_all(path, batch_rows=10)
    assert len(errors) == MAX_REPORTED_ERRORS
    assert sum(b.error_count for b in batches) == 150
    assert sum(b.skipped for b in batches) == 150


def test_a_missing_required_column_fails_the_file_with_the_accepted_names(tmp_path: Path) -> None:
    headers = [h for h in LOAN_HEADERS if h != "Monthly payment"]
    path = write_xlsx(tmp_path / "l.xlsx", headers, [])
    with pytest.raises(WorkbookError) as failure:
        SheetReader(path, LOANS)
    message = str(failure.value)
    assert "l.xlsx" in message and "'Monthly payment'" in message and "'monthly_repayment'" in message


def test_two_columns_for_one_field_is_ambiguous(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "l.xlsx", [*LOAN_HEADERS, "monthly_repayment"], [])
    with pytest.raises(WorkbookError, match="two columns for Monthly payment"):
        SheetReader(path, LOANS)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"this is not a spreadsheet", "not a readable .xlsx workbook"),
        (b"PK\x03\x04truncated", "not a readable .xlsx workbook"),
    ],
)
def test_a_corrupt_file_is_a_workbook_error(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.xlsx"
    path.write_bytes(content)
    with pytest.raises(WorkbookError, match=expected):
        SheetReader(path, LOANS)


def test_missing_file_and_empty_sheet(tmp_path: Path) -> None:
    with pytest.raises(WorkbookError, match="no such file"):
        SheetReader(tmp_path / "nope.xlsx", LOANS)
    Workbook().save(tmp_path / "empty.xlsx")
    with pytest.raises(WorkbookError, match="is empty"):
        SheetReader(tmp_path / "empty.xlsx", LOANS)


def test_a_sheet_damaged_mid_stream_is_a_workbook_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.xlsx"
    write_workbook(path, LOAN_HEADERS, iter([tuple(loan(1, i)) for i in range(1, 200)]))
    _rewrite_member(path, "xl/worksheets/sheet1.xml", b'<row r="150">', b'<row r="150"><c r="A150" t="n">')
    with SheetReader(path, LOANS) as reader, pytest.raises(WorkbookError, match="damaged sheet"):
        list(reader.batches(10))


def test_rows_become_csv_that_copy_reads_back(tmp_path: Path) -> None:
    rows = [CustomerRow(2, 1, 'O"Brien, Jr', "Ünal", None, 9_000_000_001, Decimal("10.50"), Decimal(0))]
    parsed = list(csv.reader(io.StringIO(rows_to_csv(rows).decode())))
    assert parsed == [["2", "1", 'O"Brien, Jr', "Ünal", "", "9000000001", "10.50", "0"]]


async def _frames(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    stream = asyncio.StreamReader()
    stream.feed_data(data)
    stream.feed_eof()
    frames = []
    while not stream.at_eof():
        frames.append(await read_frame(stream))
    return frames


async def test_the_child_protocol_sends_headers_then_batches_then_end(tmp_path: Path) -> None:
    customers = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(i) for i in range(1, 6)])
    loans = write_xlsx(
        tmp_path / "l.xlsx", LOAN_HEADERS, [loan(1, i) for i in range(1, 4)] + [loan(1, 9, Tenure=0)]
    )
    out = io.BytesIO()
    stream_workbooks(out, [("customers", customers), ("loans", loans)], batch_rows=2)
    frames = await _frames(out.getvalue())
    kinds = [(meta["type"], meta.get("file"), meta.get("rows")) for meta, _ in frames]
    assert kinds == [
        ("headers", None, None),
        ("batch", "customers", 2),
        ("batch", "customers", 2),
        ("batch", "customers", 1),
        ("end", "customers", None),
        ("batch", "loans", 2),
        ("batch", "loans", 1),
        ("end", "loans", None),
    ]
    assert set(frames[0][0]["files"]) == {"customers", "loans"}
    assert frames[6][0]["errors"] == [["Sheet1", 5, "Tenure", "must be greater than zero", "0"]]
    assert frames[6][0]["max_loan_id"] == 3
    assert frames[7][0]["peak_rss_kb"] > 0
    assert frames[1][1].decode().splitlines()[0].startswith("2,1,First1,Last1,31,9000000001,50000,1800000")


async def test_the_child_protocol_reports_a_bad_file_before_any_row(tmp_path: Path) -> None:
    customers = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(1)])
    loans = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS[:-1], [])
    out = io.BytesIO()
    stream_workbooks(out, [("customers", customers), ("loans", loans)], batch_rows=2)
    frames = await _frames(out.getvalue())
    assert [meta["type"] for meta, _ in frames] == ["error"]
    assert "End Date" in frames[0][0]["message"]


def test_lean_parsing_lets_go_of_finished_rows() -> None:
    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rows = "".join(f'<row r="{i}"><c r="A{i}"><v>{i}</v></c></row>' for i in range(1, 5001))
    xml = f'<worksheet xmlns="{ns}"><dimension ref="A1:A5000"/><sheetData>{rows}</sheetData></worksheet>'
    events = list(_lean_iterparse(io.BytesIO(xml.encode())))
    assert all(event == "end" for event, _ in events)
    row_ends = [element for _, element in events if element.tag == f"{{{ns}}}row"]
    assert [element.get("r") for element in row_ends] == [str(i) for i in range(1, 5001)]
    sheet_data = next(element for _, element in events if element.tag == f"{{{ns}}}sheetData")
    assert len(sheet_data) == 0  # the stdlib iterparse would have kept all 5,000 rows attached


def test_lean_parsing_is_installed_into_openpyxl_by_the_reader(tmp_path: Path) -> None:
    from openpyxl.worksheet import _reader as openpyxl_sheet_parser

    path = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [loan(1, 1)])
    SheetReader(path, LOANS).close()
    assert openpyxl_sheet_parser.iterparse is sheet._lean_iterparse


# --------------------------------------------------------------------------------------------------
# Guards against hostile cells (the files themselves: tests/ingestion/test_hostile_workbooks.py).


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (9_876_543_210, 9_876_543_210),
        (1_234_567_890, 1_234_567_890),
        ("9876543210", 9_876_543_210),
        ("+91 98765 43210", 9_876_543_210),
        ("+91-98765-43210", 9_876_543_210),
        ("(+91) 98765.43210", 9_876_543_210),
        ("919876543210", 9_876_543_210),
        (919_876_543_210, 9_876_543_210),
        (919_876_543_210.0, 9_876_543_210),
        (9_876_543_210.0, 9_876_543_210),
        ("09876543210", 9_876_543_210),
        ("9198765432", 9_198_765_432),  # ten digits already: 91 is part of the number
    ],
)
def test_phones_follow_the_apis_rule_after_dropping_a_prefix(value: object, expected: int) -> None:
    assert cells.phone(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "0098765432",  # ten digits starting with 0
        "0987654321",
        98_765_432,  # eight digits
        "98765432",
        "919876543210123",
        929_876_543_210,  # twelve digits, not +91
        "+1 555 123 4567",
        "+9876543210",
        "910987654321",  # +91 then a number starting with 0
        "x1",
        "٩٨٧٦٥٤٣٢١٠",  # Arabic-Indic digits: isdigit() but not the API's [0-9]
        "9" * 5_000,
        9_876_543_210.5,
        float("nan"),
        float("inf"),
        -9_876_543_210,
        0,
    ],
)
def test_anything_else_is_not_a_phone_number(value: object) -> None:
    with pytest.raises(cells.Invalid, match="phone number"):
        cells.phone(value)


NUMERIC_PARSERS = [
    cells.identifier,
    cells.positive_count,
    cells.count,
    cells.age,
    cells.money,
    cells.positive_money,
    cells.rate,
]


@pytest.mark.parametrize("parse", NUMERIC_PARSERS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("text", ["1E999999999", "-1E999999999", "1e999999999", "9" * 30])
def test_a_huge_number_as_text_is_refused_at_once(parse: Any, text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(cells.Invalid, match="too large"):
        parse(text)
    assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize("parse", NUMERIC_PARSERS, ids=lambda p: p.__name__)
def test_a_numeric_text_longer_than_any_valid_value_is_refused_before_parsing(parse: Any) -> None:
    with pytest.raises(cells.Invalid, match="more than 40 characters"):
        parse("1" + "0" * 40)
    with pytest.raises(cells.Invalid, match="more than 40 characters"):
        parse(" 1" * 20_000)


@pytest.mark.parametrize(
    "parse",
    [*NUMERIC_PARSERS, cells.phone, cells.name, sheet._date_parser(WINDOWS_EPOCH)],
    ids=lambda p: getattr(p, "__name__", "date"),
)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_every_parser_refuses_nan_and_infinity(parse: Any, value: float) -> None:
    with pytest.raises(cells.Invalid):
        parse(value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NaN", "not a number"),
        ("nan", "not a number"),
        ("INF", "too large"),
        ("-Infinity", "too large"),
        ("1E999", "too large"),
        ("-1e400", "too large"),
        ("9" * 5_000, "too large (5,000 digits)"),
        ("12abc", "not a number"),
    ],
)
def test_a_numeric_cell_that_is_no_finite_number_becomes_a_marker_every_parser_refuses(
    text: str, reason: str
) -> None:
    value = workbook_limits.cast_number(text)
    assert isinstance(value, workbook_limits.BadNumber)
    assert value.reason == reason and len(str(value)) <= 60
    for parse in [*NUMERIC_PARSERS, cells.phone, cells.name]:
        with pytest.raises(cells.Invalid) as raised:
            parse(value)
        if parse is not cells.name:
            assert str(raised.value) == reason
    with pytest.raises(cells.Invalid):
        sheet._date_parser(WINDOWS_EPOCH)(value)


def openpyxl_cast_number(value: str) -> int | float:
    """openpyxl 3.1.5's own `_cast_number` (the module attribute is replaced once the reader ran)."""
    if "." in value or "E" in value or "e" in value:
        return float(value)
    return int(value)


def test_ordinary_numeric_cells_cast_as_openpyxl_does() -> None:
    for text in ["0", "42", "-7", "1.5", "2.5E3", "1e-3", "9" * 600]:
        assert workbook_limits.cast_number(text) == openpyxl_cast_number(text)
        assert type(workbook_limits.cast_number(text)) is type(openpyxl_cast_number(text))


@pytest.mark.parametrize("text", sorted(cells.EXCEL_ERRORS))
def test_excel_error_values_are_refused_with_their_name(text: str) -> None:
    for parse in [cells.identifier, cells.money, cells.name, cells.phone]:
        with pytest.raises(cells.Invalid, match="Excel error value"):
            parse(text)
    with pytest.raises(cells.Invalid, match="Excel error value"):
        sheet._date_parser(WINDOWS_EPOCH)(text)


def test_cell_references_are_cached_and_stop_at_column_xfd() -> None:
    assert workbook_limits.cell_coordinate("A1") == (1, 1)
    assert workbook_limits.cell_coordinate("XFD1048576") == (1_048_576, 16_384)
    assert workbook_limits.cell_coordinate("AB12") == (12, 28) == workbook_limits.cell_coordinate("AB12")
    assert workbook_limits.cell_coordinate("ab3") == (3, 28)
    with pytest.raises(workbook_limits.LimitExceeded, match="XFE1"):
        workbook_limits.cell_coordinate("XFE1")
    with pytest.raises(workbook_limits.LimitExceeded, match="ZZZ9"):
        workbook_limits.cell_coordinate("ZZZ9")


def _sheet(rows: str) -> bytes:
    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    return f'<worksheet xmlns="{ns}"><sheetData>{rows}</sheetData></worksheet>'.encode()


def test_lean_parsing_refuses_a_text_run_longer_than_a_cell_can_be() -> None:
    text = "a" * (workbook_limits.MAX_TEXT_RUN_BYTES + 200_000)
    source = io.BytesIO(_sheet(f'<row r="7"><c r="A7" t="inlineStr"><is><t>{text}</t></is></c></row>'))
    with pytest.raises(workbook_limits.LimitExceeded, match="in row 7"):
        list(_lean_iterparse(source))
    # The longest a cell may be, every character escaped, is fine.
    text = "&#65533;" * workbook_limits.EXCEL_MAX_CELL_CHARS
    source = io.BytesIO(_sheet(f'<row r="7"><c r="A7" t="inlineStr"><is><t>{text}</t></is></c></row>'))
    assert len(list(_lean_iterparse(source))) > 3


def test_lean_parsing_refuses_a_row_wider_than_excel_while_it_is_parsed() -> None:
    cells = "<c/>" * 100_000  # 400 KB: several chunks of one row
    with pytest.raises(workbook_limits.LimitExceeded, match="row 3 has"):
        list(_lean_iterparse(io.BytesIO(_sheet(f'<row r="3">{cells}</row>'))))
    assert len(list(_lean_iterparse(io.BytesIO(_sheet(f'<row r="3">{"<c/>" * 16_384}</row>'))))) > 16_384


def test_a_tenure_over_600_months_is_a_row_error_not_a_stalled_reader(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "l.xlsx",
        LOAN_HEADERS,
        [
            loan(1, 1, Tenure=600, **{"EMIs paid on Time": 0}),
            loan(1, 2, Tenure=601),
            loan(1, 3, Tenure=2**31 - 1),
        ],
    )
    rows, errors, _ = read_all(path)
    assert [row.tenure for row in rows] == [600]
    assert [(e.row, e.column, e.reason) for e in errors] == [
        (3, "Tenure", "more than 600 months"),
        (4, "Tenure", "more than 600 months"),
    ]


def test_the_reader_process_derives_limits_with_the_policy_it_is_handed(tmp_path: Path) -> None:
    """The worker passes its loaded policy's limit rule to `python -m app.ingestion.reader`."""
    import subprocess
    import sys

    headers = [h for h in CUSTOMER_HEADERS if h not in ("Approved Limit", "Age")]
    path = write_xlsx(tmp_path / "c.xlsx", headers, [[1, "A", "B", 9_000_000_001, 62_500]])
    frames = subprocess.run(
        [sys.executable, "-m", "app.ingestion.reader", "--limit-multiplier=10", "--limit-rounding-unit=1000",
         f"customers={path}"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    # 10 x 62,500 to the nearest thousand; the built-in rule would give 2,300,000.
    assert b"625000" in frames and b"2300000" not in frames
