"""Hostile workbooks: each must cost the reader bounded time and memory, and fail the file (naming the
part and row or cell) or cost a row (with its reason), never the reader's host.

The corpus is built here, small on disk: where openpyxl cannot write the file, the xlsx parts are written
by hand with zipfile (bombs are long runs of one character, which deflate ~1000:1). Every file is read by
the real reader child (`python -m app.ingestion.reader`, through `ReaderProcess` as the job does), whose
frames report its peak memory.
"""

from __future__ import annotations

import datetime as dt
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.ingestion.reader_process import ReaderProcess
from app.ingestion.rows import WorkbookError
from tests.ingestion.conftest import (
    CUSTOMER_HEADERS,
    LOAN_HEADERS,
    Ingest,
    customer,
    dump,
    loan,
    write_xlsx,
)
from tests.ingestion.conftest import (
    rows as query_rows,
)
from tests.ingestion.xlsx_parts import NS, RawCell, sheet_xml, write_parts

MB = 1024 * 1024
WALL_S = 5.0  # each hostile file, read by a fresh reader process (~0.5 s of it interpreter start-up)
PEAK_MB = 300
SHEET_PART = "xl/worksheets/sheet1.xml"


def loan_values(customer_id: object, loan_id: object, **overrides: object) -> list[object]:
    """A loan row as sheet XML values: dates as serial numbers (no styles in a hand-made file)."""
    values = loan(customer_id, loan_id, **overrides)  # type: ignore[arg-type]
    return [(v - _EXCEL_EPOCH).days if isinstance(v, dt.datetime) else v for v in values]


_EXCEL_EPOCH = dt.datetime(1899, 12, 30)


def run_of(prefix: str, unit: bytes, size: int, suffix: str) -> Iterator[bytes]:
    """prefix + `unit` repeated to `size` bytes (whole units) + suffix, in ~1 MiB chunks."""
    yield prefix.encode()
    per_block = max(1, MB // len(unit))
    block = unit * per_block
    units = size // len(unit)
    for _ in range(units // per_block):
        yield block
    yield unit * (units % per_block)
    yield suffix.encode()


# --------------------------------------------------------------------------------------------------
# Reading through the real reader process.


@dataclass
class Outcome:
    error: str | None
    rows: int
    errors: list[list[Any]] = field(default_factory=list)
    error_count: int = 0
    sheet: str | None = None
    peak_rss_mb: float = 0.0
    seconds: float = 0.0


async def read_in_child(kind: str, path: Path, **settings: Any) -> Outcome:
    options: dict[str, Any] = {"ingestion_batch_rows": 1_000, **settings}
    reader = ReaderProcess(kind, path, Settings(**options))  # type: ignore[arg-type]
    started = time.perf_counter()
    outcome = Outcome(error=None, rows=0)
    async with reader:
        try:
            header = await reader.header()
            outcome.sheet = header.sheet
            async for info, _ in reader.batches():
                outcome.rows += info.rows
                outcome.error_count += info.error_count
                outcome.errors.extend(info.errors)
        except WorkbookError as exc:
            outcome.error = str(exc)
    outcome.seconds = time.perf_counter() - started
    outcome.peak_rss_mb = reader.peak_rss_kb / 1024
    return outcome


def assert_bounded(outcome: Outcome) -> None:
    assert outcome.seconds < WALL_S, f"took {outcome.seconds:.1f} s"
    assert 0 < outcome.peak_rss_mb < PEAK_MB, f"peak RSS {outcome.peak_rss_mb:.0f} MB"


def header_row(headers: Iterable[str]) -> tuple[int, list[object]]:
    return 1, list(headers)


# --------------------------------------------------------------------------------------------------
# Excel's limits: rows, columns, characters.


async def test_a_row_past_excels_last_fails_the_file_at_once(tmp_path: Path) -> None:
    rows = [header_row(LOAN_HEADERS), (2, loan_values(1, 1)), (2_000_000_000, loan_values(1, 2))]
    path = write_parts(tmp_path / "l.xlsx", [sheet_xml(rows)])
    outcome = await read_in_child("loans", path)
    assert outcome.error is not None
    assert SHEET_PART in outcome.error and "row 2000000000" in outcome.error
    assert "1,048,576" in outcome.error
    assert_bounded(outcome)  # openpyxl alone walks two billion empty rows


async def test_excels_last_row_itself_is_read(tmp_path: Path) -> None:
    rows = [header_row(LOAN_HEADERS), (1_048_576, loan_values(1, 1))]
    path = write_parts(tmp_path / "l.xlsx", [sheet_xml(rows)])
    outcome = await read_in_child("loans", path)
    assert outcome.error is None and outcome.rows == 1
    assert_bounded(outcome)


async def test_a_cell_past_column_xfd_fails_the_file(tmp_path: Path) -> None:
    rows = [header_row(LOAN_HEADERS), (2, loan_values(1, 1))]
    tail = '<row r="3"><c r="A3"><v>1</v></c><c r="XFE3"><v>1</v></c></row>'
    path = write_parts(tmp_path / "l.xlsx", [sheet_xml(rows, tail)])
    outcome = await read_in_child("loans", path)
    assert outcome.error is not None
    assert SHEET_PART in outcome.error and "XFE3" in outcome.error
    assert_bounded(outcome)


async def test_a_row_of_more_cells_than_columns_fails_the_file(tmp_path: Path) -> None:
    rows = [header_row(LOAN_HEADERS)]
    tail = '<row r="2">' + "<c><v>1</v></c>" * 16_385 + "</row>"  # cells without a reference
    path = write_parts(tmp_path / "l.xlsx", [sheet_xml(rows, tail)])
    outcome = await read_in_child("loans", path)
    assert outcome.error is not None
    assert SHEET_PART in outcome.error and "row 2 has" in outcome.error and "XFD" in outcome.error
    assert_bounded(outcome)


async def test_a_giant_inline_cell_is_refused_without_being_held(tmp_path: Path) -> None:
    """1 GiB of one character in one cell (1 MB on disk). The part limit is raised past it, so what stops
    it is the text-run bound, while streaming."""
    prefix = sheet_xml([header_row(LOAN_HEADERS)]).removesuffix("</sheetData></worksheet>")
    cell = '<row r="2"><c r="A2" t="inlineStr"><is><t>'
    path = write_parts(
        tmp_path / "l.xlsx",
        [run_of(prefix + cell, b"7", 1024 * MB, "</t></is></c></row></sheetData></worksheet>")],
    )
    assert path.stat().st_size < 8 * MB
    outcome = await read_in_child("loans", path, ingestion_max_part_mb=4_096)
    assert outcome.error is not None
    assert SHEET_PART in outcome.error and "in row 2" in outcome.error and "32,767" in outcome.error
    assert_bounded(outcome)


async def test_a_giant_text_split_by_comments_is_refused_too(tmp_path: Path) -> None:
    """`<` is no marker of a text's end: comments inside a <t> join one text for ElementTree."""
    prefix = sheet_xml([header_row(LOAN_HEADERS)]).removesuffix("</sheetData></worksheet>")
    chunk = ("x" * 60 + "<!---->").encode()
    body = (chunk * (1 + 4 * MB // len(chunk)) for _ in range(64))  # 256 MB
    parts = [(prefix + '<row r="2"><c r="B2" t="inlineStr"><is><t>').encode(), *body]
    parts.append(b"</t></is></c></row></sheetData></worksheet>")
    path = write_parts(tmp_path / "l.xlsx", [iter(parts)])
    outcome = await read_in_child("loans", path)
    assert outcome.error is not None and "32,767" in outcome.error
    assert_bounded(outcome)


async def test_the_part_size_limit_refuses_a_bomb_before_inflating_it(tmp_path: Path) -> None:
    prefix = sheet_xml([header_row(LOAN_HEADERS)]).removesuffix("</sheetData></worksheet>")
    path = write_parts(tmp_path / "l.xlsx", [run_of(prefix, b" ", 300 * MB, "</sheetData></worksheet>")])
    outcome = await read_in_child("loans", path, ingestion_max_part_mb=256)
    assert outcome.error is not None
    assert SHEET_PART in outcome.error and "inflates to 300 MB" in outcome.error and "256 MB" in outcome.error
    assert_bounded(outcome)

    # Settable: under a 1 MB limit, a ~200 KB sheet is read and a ~2 MB one refused.
    small = write_xlsx(tmp_path / "small.xlsx", LOAN_HEADERS, [loan(1, i) for i in range(1, 1_500)])
    outcome = await read_in_child("loans", small, ingestion_max_part_mb=1)
    assert outcome.error is None and outcome.rows == 1_499
    bigger = write_xlsx(tmp_path / "bigger.xlsx", LOAN_HEADERS, [loan(1, i) for i in range(1, 15_000)])
    outcome = await read_in_child("loans", bigger, ingestion_max_part_mb=1)
    assert outcome.error is not None and "ingestion_max_part_mb" in outcome.error


def _shared_strings(strings: Iterable[str], count: int) -> Iterator[bytes]:
    yield f'<sst xmlns="{NS}" count="{count}" uniqueCount="{count}">'.encode()
    for text in strings:
        yield f"<si><t>{text}</t></si>".encode()
    yield b"</sst>"


async def test_a_shared_strings_bomb_is_refused_from_the_central_directory(tmp_path: Path) -> None:
    """The case that grew the reader past 5.5 GB: 720 MB of shared strings in a ~1 MB file."""
    one = "<si><t>" + "A" * 1_000 + "</t></si>"
    count = 720 * MB // len(one)
    rows = [(1, [RawCell("0", ' t="s"')]), (2, [1])]
    path = write_parts(
        tmp_path / "l.xlsx",
        [sheet_xml(rows)],
        shared_strings=run_of(f'<sst xmlns="{NS}">', one.encode(), count * len(one), "</sst>"),
    )
    assert path.stat().st_size < 8 * MB
    outcome = await read_in_child("loans", path)
    assert outcome.error is not None
    assert "xl/sharedStrings.xml" in outcome.error and "ingestion_max_shared_strings_mb" in outcome.error
    assert_bounded(outcome)


async def test_too_many_shared_strings_are_refused_while_reading_them(tmp_path: Path) -> None:
    strings = (f"s{i}" for i in range(5_000))
    rows = [(1, [RawCell("0", ' t="s"')])]
    path = write_parts(tmp_path / "l.xlsx", [sheet_xml(rows)], shared_strings=_shared_strings(strings, 5_000))
    outcome = await read_in_child("loans", path, ingestion_max_shared_strings=1_000)
    assert outcome.error is not None
    assert "xl/sharedStrings.xml" in outcome.error and "more than 1,000 shared strings" in outcome.error
    assert_bounded(outcome)


async def test_a_giant_shared_string_is_refused_without_being_held(tmp_path: Path) -> None:
    """Under the shared strings size limit (raised here), one string of 100 MB: the text-run bound."""
    rows = [(1, [RawCell("0", ' t="s"')])]
    strings = run_of(f'<sst xmlns="{NS}"><si><t>', b"z", 100 * MB, "</t></si></sst>")
    path = write_parts(tmp_path / "l.xlsx", [sheet_xml(rows)], shared_strings=strings)
    outcome = await read_in_child("loans", path, ingestion_max_shared_strings_mb=512)
    assert outcome.error is not None
    assert "xl/sharedStrings.xml" in outcome.error and "32,767" in outcome.error
    assert_bounded(outcome)


async def test_a_shared_strings_part_under_another_name_is_bounded_as_it_streams(tmp_path: Path) -> None:
    """The size check by name is only the first: bytes are counted while reading, whatever the part."""
    strings = (("w" * 1_000 + f"{i}") for i in range(3_000))  # ~3 MB
    sst = b"".join(_shared_strings(strings, 3_000))
    rows = [(1, [RawCell("0", ' t="s"')])]
    path = write_parts(tmp_path / "l.xlsx", [sheet_xml(rows)])
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(
        b"</Types>",
        b'<Override PartName="/xl/strings.xml" ContentType="application/vnd.openxmlformats-'
        b'officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
    )
    parts["xl/strings.xml"] = sst
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in parts.items():
            archive.writestr(name, content)
    outcome = await read_in_child("loans", path, ingestion_max_shared_strings_mb=2)
    assert outcome.error is not None
    assert "xl/strings.xml" in outcome.error and "over 2 MB" in outcome.error
    assert_bounded(outcome)


async def test_bzip2_and_lzma_parts_are_refused(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [loan(1, 1)])
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in parts.items():
            method = zipfile.ZIP_LZMA if name == SHEET_PART else zipfile.ZIP_DEFLATED
            archive.writestr(name, content, compress_type=method)
    outcome = await read_in_child("loans", path)
    assert (
        outcome.error is not None and SHEET_PART in outcome.error and "compression method 14" in outcome.error
    )


async def test_too_many_parts_are_refused(tmp_path: Path) -> None:
    path = write_parts(
        tmp_path / "l.xlsx",
        [sheet_xml([header_row(LOAN_HEADERS)])],
        extra={f"xl/media/pad{i}.bin": b"" for i in range(10_001)},
    )
    outcome = await read_in_child("loans", path)
    assert outcome.error is not None and "10,00" in outcome.error and "parts" in outcome.error
    assert_bounded(outcome)


# --------------------------------------------------------------------------------------------------
# A bad cell costs its row, not the file.


async def test_bad_numeric_cells_are_row_errors_with_their_reason(tmp_path: Path) -> None:
    rows = [
        header_row(LOAN_HEADERS),
        (2, loan_values(1, 1)),
        (3, loan_values(1, RawCell("NaN"))),  # type: ignore[arg-type]
        (4, loan_values(1, 4, **{"Loan Amount": RawCell("INF")})),
        (5, loan_values(1, 5, **{"Tenure": RawCell("-Infinity")})),
        (6, loan_values(1, RawCell("9" * 5_000))),  # type: ignore[arg-type]
        (7, loan_values(1, 7, **{"Interest Rate": RawCell("1E999")})),
        (8, loan_values(1, 8, **{"Monthly payment": RawCell("#DIV/0!", ' t="e"')})),
        (9, loan_values(RawCell("#N/A", ' t="e"'), 9)),  # type: ignore[arg-type]
        (10, loan_values(1, 10)),
    ]
    path = write_parts(tmp_path / "l.xlsx", [sheet_xml(rows)])
    outcome = await read_in_child("loans", path)
    assert outcome.error is None
    assert outcome.rows == 2
    assert [(e[1], e[2], e[3]) for e in outcome.errors] == [
        (3, "Loan ID", "not a number"),
        (4, "Loan Amount", "too large"),
        (5, "Tenure", "too large"),
        (6, "Loan ID", "too large (5,000 digits)"),
        (7, "Interest Rate", "too large"),
        (8, "Monthly payment", "an Excel error value (#DIV/0!)"),
        (9, "Customer ID", "an Excel error value (#N/A)"),
    ]
    assert outcome.errors[3][4].startswith("999") and len(outcome.errors[3][4]) <= 60
    assert_bounded(outcome)


@pytest.mark.parametrize("column", ["Customer ID", "Loan ID", "Loan Amount", "Tenure", "Monthly payment"])
async def test_a_huge_exponent_as_text_is_a_row_error_at_once(tmp_path: Path, column: str) -> None:
    rows = [loan(1, 1), loan(1, 2, **{column: "1E999999999"}), loan(1, 3, **{column: "9" * 41})]
    rows.append(loan(1, 4, **{"EMIs paid on Time": "1e999999999", "Interest Rate": "-1E999999999"}))
    path = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, rows)
    outcome = await read_in_child("loans", path)
    assert outcome.error is None and outcome.rows == 1
    reasons = {(e[1], e[2]): e[3] for e in outcome.errors}
    assert reasons[(3, column)].startswith("too large")
    assert reasons[(4, column)] == "not a number (more than 40 characters)"
    assert reasons[(5, "EMIs paid on Time")] == "too large"
    assert reasons[(5, "Interest Rate")].startswith("too large")
    assert_bounded(outcome)


async def test_huge_exponents_in_customer_columns_are_row_errors(tmp_path: Path) -> None:
    rows = [
        customer(1, **{"Age": "1E999999999"}),
        customer(2, **{"Monthly Salary": "1E999999999", "Approved Limit": "1e999999999"}),
        customer(3, **{"Customer ID": "1E999999999", "Phone Number": "1E999999999"}),
        customer(4),
    ]
    path = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, rows)
    outcome = await read_in_child("customers", path)
    assert outcome.error is None and outcome.rows == 1
    assert [(e[1], e[2], e[3][:9]) for e in outcome.errors] == [
        (2, "Age", "too large"),
        (3, "Monthly Salary", "too large"),
        (3, "Approved Limit", "too large"),
        (4, "Customer ID", "too large"),
        (4, "Phone Number", "not a pho"),
    ]
    assert_bounded(outcome)


# --------------------------------------------------------------------------------------------------
# Which sheet.


@pytest.mark.parametrize("state", ["hidden", "veryHidden"])
async def test_a_hidden_first_sheet_is_skipped(tmp_path: Path, state: str) -> None:
    workbook = Workbook()
    lookup = workbook.active
    assert lookup is not None
    lookup.title = "Lookup"
    lookup.append(list(LOAN_HEADERS))
    lookup.append(loan(9, 9))
    lookup.sheet_state = state
    data = workbook.create_sheet("Loans")
    data.append(list(LOAN_HEADERS))
    data.append(loan(1, 1))
    data.append(loan(1, 2))
    workbook.active = 1
    path = tmp_path / "l.xlsx"
    workbook.save(path)
    outcome = await read_in_child("loans", path)
    assert outcome.error is None and outcome.sheet == "Loans" and outcome.rows == 2


async def test_a_workbook_of_hidden_sheets_only_fails(tmp_path: Path) -> None:
    sheet = sheet_xml([header_row(LOAN_HEADERS), (2, loan_values(1, 1))])
    path = write_parts(tmp_path / "l.xlsx", [sheet, sheet], states=["hidden", "veryHidden"])
    outcome = await read_in_child("loans", path)
    assert outcome.error is not None and "no visible worksheet" in outcome.error


# --------------------------------------------------------------------------------------------------
# The last line of defence: the address-space limit.


async def test_running_out_of_the_address_space_limit_is_an_error_frame(tmp_path: Path) -> None:
    """With a limit too small for the real export (every bound passed), the reader says it ran out of
    memory under that limit instead of being killed, and still reports its peak."""
    # 2,000 distinct shared strings of 30,000 characters: 60 MB openpyxl holds while the file is open.
    strings = (f"{i:05}" + "n" * 29_995 for i in range(2_000))
    header = [(1, [RawCell(str(i), ' t="s"') for i in range(len(CUSTOMER_HEADERS))])]
    row = [(2, customer(1))]
    path = write_parts(
        tmp_path / "c.xlsx",
        [sheet_xml(header + row)],
        shared_strings=_shared_strings((*CUSTOMER_HEADERS, *strings), 2_000 + len(CUSTOMER_HEADERS)),
    )
    outcome = await read_in_child("customers", path, ingestion_reader_memory_mb=64)
    assert outcome.error is not None
    assert "ran out of memory under its 64 MB address-space limit" in outcome.error
    assert 0 < outcome.peak_rss_mb < 64
    fine = await read_in_child("customers", path)
    assert fine.error is None and fine.rows == 1


# --------------------------------------------------------------------------------------------------
# Through the job.


async def test_a_hostile_file_fails_its_job_with_the_reason_and_writes_nothing(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    """The customers file breaks past Excel's last row, after good rows: neither file is written."""
    rows = [header_row(CUSTOMER_HEADERS), (2, customer(1)), (2_000_000_000, customer(2))]
    customers = write_parts(tmp_path / "c.xlsx", [sheet_xml(rows)])
    loans = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [loan(1, 1)])
    started = time.perf_counter()
    state = await ingest(customers, loans)
    assert time.perf_counter() - started < 20
    assert state.status == "failed" and state.report is not None
    assert state.error is not None and SHEET_PART in state.error and "row 2000000000" in state.error
    assert state.report.reader_peak_rss_mb is not None and 0 < state.report.reader_peak_rss_mb < PEAK_MB
    after = await dump(db)
    assert after["customers"] == [] and after["loans"] == []


async def test_a_bomb_fails_its_job_before_anything_is_read(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    customers = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(1)])
    one = "<si><t>" + "B" * 1_000 + "</t></si>"
    loans = write_parts(
        tmp_path / "l.xlsx",
        [sheet_xml([(1, [RawCell("0", ' t="s"')])])],
        shared_strings=run_of(f'<sst xmlns="{NS}">', one.encode(), 200 * MB, "</sst>"),
    )
    state = await ingest(customers, loans)
    assert state.status == "failed" and state.error is not None
    assert "xl/sharedStrings.xml inflates to 200 MB" in state.error
    assert state.report is not None and state.report.files == []
    after = await dump(db)
    assert after["customers"] == [] and after["loans"] == []


async def test_bad_cells_are_row_errors_in_the_job_and_good_rows_load(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    customers = write_xlsx(
        tmp_path / "c.xlsx",
        CUSTOMER_HEADERS,
        [
            customer(1, **{"Phone Number": "+91 98765 43210"}),
            customer(2, **{"Phone Number": 919_876_543_211}),
            customer(3, **{"Phone Number": "0098765432"}),
            customer(4, **{"Age": "1E999999999"}),
        ],
    )
    rows = [header_row(LOAN_HEADERS), (2, loan_values(1, 11)), (3, loan_values(2, RawCell("NaN")))]  # type: ignore[arg-type]
    loans = write_parts(tmp_path / "l.xlsx", [sheet_xml(rows)])
    state = await ingest(customers, loans)
    assert state.status == "complete", state.error
    assert state.report is not None
    files = {f.file: f for f in state.report.files}
    assert (files["customers"].inserted, files["customers"].skipped) == (2, 2)
    assert (files["loans"].inserted, files["loans"].skipped) == (1, 1)
    phones = await query_rows(db, "SELECT customer_id, phone_number FROM customers ORDER BY customer_id")
    assert [tuple(row) for row in phones] == [(1, 9_876_543_210), (2, 9_876_543_211)]


def test_the_settings_defaults_are_the_readers_defaults() -> None:
    """One set of bounds: the job passes its settings to the reader, whose own defaults must agree (config
    keeps literals so the API process never imports openpyxl)."""
    from app.ingestion import workbook_limits

    defaults = Settings.model_fields
    assert defaults["ingestion_max_part_mb"].default == workbook_limits.DEFAULT_MAX_PART_MB
    assert (
        defaults["ingestion_max_shared_strings_mb"].default == workbook_limits.DEFAULT_MAX_SHARED_STRINGS_MB
    )
    assert defaults["ingestion_max_shared_strings"].default == workbook_limits.DEFAULT_MAX_SHARED_STRINGS
    assert defaults["ingestion_reader_memory_mb"].default == workbook_limits.DEFAULT_READER_MEMORY_MB
