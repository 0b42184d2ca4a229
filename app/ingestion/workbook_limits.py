"""Bounds on what a workbook may make the reader do: a hostile .xlsx must cost bounded time and memory.

Checked before openpyxl opens the file (`check_archive`, on the zip's central directory alone):
- each part's uncompressed size, and the shared strings part's (openpyxl holds every shared string in a
  list for as long as the workbook is open: a 1.7 MB file whose sharedStrings.xml inflates to 720 MB grew
  the reader past 5.5 GB);
- the number of parts, and their compression method.

Checked while parsing (openpyxl's hooks, installed by `install`):
- Excel's own limits: 1,048,576 rows and 16,384 columns fail the file as soon as a row or cell past them
  is met (openpyxl's read-only iterator would otherwise yield every empty row up to `<row r="2000000000">`);
- a text run (a cell's text, an attribute, a comment, anything between two parsed elements) longer than
  32,767 characters can take in XML fails the file before it is held whole (`TextRunGuard`);
- the shared strings: their bytes, their number, and each one's length (`read_shared_strings`);
- a numeric cell openpyxl cannot turn into a finite number (`NaN`, `INF`, 5,000 digits, `1E999`) becomes
  a `BadNumber` the cell parsers turn into a row error, instead of an exception that ends the sheet.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, XMLPullParser

from openpyxl.cell.text import Text
from openpyxl.reader import excel as _openpyxl_excel
from openpyxl.utils.cell import coordinate_to_tuple
from openpyxl.worksheet import _read_only as _openpyxl_read_only
from openpyxl.worksheet import _reader as _openpyxl_sheet_parser
from openpyxl.xml.constants import SHEET_MAIN_NS

MB = 1024 * 1024

EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_COLUMNS = 16_384  # column XFD
EXCEL_MAX_CELL_CHARS = 32_767
MAX_TEXT_RUN_BYTES = EXCEL_MAX_CELL_CHARS * 12
"""~384 KiB: the most XML 32,767 characters take, escapes included (`&#1114111;` is 10 bytes, Excel's
`_x005F_` 7), with slack. A legitimate cell's text never needs more bytes without an element ending."""
MAX_PARTS = 10_000
"""Zip members. zipfile reads the whole central directory into ZipInfo objects (~0.5 KB each); a real
export has about a dozen parts."""
MAX_WHOLE_PART_MB = 32
"""Parts openpyxl parses whole into a tree (workbook.xml, styles.xml, rels, theme, ...): kilobytes in a
real export, and an ElementTree costs many times its XML."""
CHUNK_BYTES = 64 * 1024

# Defaults (Settings.ingestion_* and the reader's options), from measurements on CPython 3.11.7:
# - a generated 1,000,000-row export (app/sample_data.py): loans sheet1.xml 348 MB (51 MB compressed),
#   customers sheet1.xml 305 MB with inline strings; Excel's 1,048,576 rows -> ~365 MB. 1 GiB: ~2.8x.
# - the worst shared strings a real customers export could have, every first and last name distinct
#   (1,048,575 rows, 17-character names): 2,097,157 strings, sharedStrings.xml 63 MB. 128 MB: 2x;
#   3,000,000 strings: 1.4x.
# - reader memory: a normal 1M-row read peaks at VmPeak 42 MB / VmHWM 37 MB; the worst-case shared
#   strings file above at VmPeak 205 MB / VmHWM 197 MB (~80 bytes a string). 1 GiB of address space: 5x.
DEFAULT_MAX_PART_MB = 1_024
DEFAULT_MAX_SHARED_STRINGS_MB = 128
DEFAULT_MAX_SHARED_STRINGS = 3_000_000
DEFAULT_READER_MEMORY_MB = 1_024

_SI_TAG = f"{{{SHEET_MAIN_NS}}}si"


class LimitExceeded(Exception):
    """The workbook breaks a bound; the message names the part (and row or cell) and the limit."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_part_mb: int = DEFAULT_MAX_PART_MB
    max_shared_strings_mb: int = DEFAULT_MAX_SHARED_STRINGS_MB
    max_shared_strings: int = DEFAULT_MAX_SHARED_STRINGS


# --------------------------------------------------------------------------------------------------
# The zip, before openpyxl opens it.


def _is_parsed_whole(name: str) -> bool:
    lowered = name.lower()
    return lowered.endswith((".xml", ".rels")) and not lowered.startswith("xl/worksheets/sheet")


def check_archive(path: Path, limits: Limits) -> None:
    """Refuse a zip whose parts would inflate past the limits, judged from its central directory.

    The declared sizes can be trusted as bounds: Python's zipfile never returns more than a member's
    declared `file_size` (ZipExtFile._read1 ends with `data = data[:self._left]`, `_left` starting at
    `zipinfo.file_size`, and then marks the member at EOF; verified on CPython 3.11.7), and a member that
    claims less than it holds fails its CRC check. For deflate that holds for memory too (each inflate call
    is bounded by the bytes asked for); bzip2 and LZMA members are inflated without that bound, and no
    spreadsheet program writes them, so they are refused.
    """
    try:
        with path.open("rb") as stream:
            end = zipfile._EndRecData(stream)  # type: ignore[attr-defined]
    except OSError:
        return  # openpyxl reports the unreadable file
    if not end:
        return  # not a zip: openpyxl says so
    entries = end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    if entries > MAX_PARTS:
        raise LimitExceeded(f"the zip holds {entries:,} parts (limit {MAX_PARTS:,})")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    with archive:
        for info in archive.infolist():
            name = info.filename
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise LimitExceeded(
                    f"{name} uses compression method {info.compress_type} (only stored and deflated "
                    "parts are read)"
                )
            if name.lower().rsplit("/", 1)[-1] == "sharedstrings.xml":
                limit_mb, setting = limits.max_shared_strings_mb, "ingestion_max_shared_strings_mb"
            elif _is_parsed_whole(name):
                limit_mb, setting = min(MAX_WHOLE_PART_MB, limits.max_part_mb), ""
            else:
                limit_mb, setting = limits.max_part_mb, "ingestion_max_part_mb"
            if info.file_size > limit_mb * MB:
                where = f" ({setting})" if setting else ""
                raise LimitExceeded(
                    f"{name} inflates to {info.file_size / MB:,.0f} MB ({info.compress_size / MB:,.1f} MB "
                    f"compressed), over the limit of {limit_mb:,} MB{where}"
                )


# --------------------------------------------------------------------------------------------------
# While parsing.


class TextRunGuard:
    """Fails a part once more than MAX_TEXT_RUN_BYTES of XML were fed without a single parse event.

    Between two events (element starts or ends) lies one text run, attribute list, comment or the like:
    the XML parser and ElementTree hold it whole until the next event. Fed in CHUNK_BYTES chunks, a chunk
    that produced no event extends the run; one that did ends it (to within one chunk). `<` cannot serve as
    the marker instead: comments, processing instructions and CDATA put `<` inside one text run.
    """

    __slots__ = ("part", "quiet")

    def __init__(self, part: str) -> None:
        self.part = part
        self.quiet = 0

    def fed(self, pull: XMLPullParser, size: int, where: Element | None = None) -> None:
        if pull._events_queue:  # type: ignore[attr-defined]
            self.quiet = 0
            return
        self.quiet += size
        if self.quiet > MAX_TEXT_RUN_BYTES:
            row = where.get("r") if where is not None else None
            at = f" in row {row}" if row else ""
            raise LimitExceeded(
                f"{self.part}: more than {MAX_TEXT_RUN_BYTES:,} bytes of XML without an element{at}: "
                f"a text longer than a cell's {EXCEL_MAX_CELL_CHARS:,} characters"
            )


def part_name(source: Any) -> str:
    name = getattr(source, "name", None)
    return str(name) if name else str(source)


def row_past_limit(part: str, row: object) -> LimitExceeded:
    return LimitExceeded(f"{part}: row {row} is past Excel's last row ({EXCEL_MAX_ROWS:,})")


def row_too_wide(part: str, row: object, cells: int) -> LimitExceeded:
    return LimitExceeded(
        f"{part}: row {row} has {cells:,} cells, past Excel's last column (XFD, {EXCEL_MAX_COLUMNS:,})"
    )


class BadNumber(float):
    """A numeric cell that is not a finite number openpyxl can represent: `NaN`, `INF`, `1E999`, 5,000
    digits. As a float it is NaN (so openpyxl's date conversion of a date-formatted cell turns it into
    `#VALUE!` like any bad serial); the cell parsers report `reason`. str() is the cell's text."""

    reason: str
    text: str

    def __new__(cls, text: str, reason: str) -> BadNumber:
        number = super().__new__(cls, "nan")
        number.reason = reason
        number.text = text if len(text) <= 60 else text[:57] + "..."
        return number

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


def cast_number(value: str) -> int | float:
    """openpyxl's `_cast_number`, whose ValueError on `NaN` or 5,000 digits ended the whole sheet."""
    if "." in value or "E" in value or "e" in value:
        try:
            number = float(value)
        except ValueError:
            return BadNumber(value, "not a number")
        if number - number == 0.0:  # finite (inf - inf and nan - nan are nan)
            return number
        return BadNumber(value, "not a number" if number != number else "too large")
    try:
        return int(value)
    except ValueError:
        pass
    stripped = value.strip().lstrip("+-")
    if stripped.isdigit():
        return BadNumber(value, f"too large ({len(stripped):,} digits)")
    try:
        number = float(value)  # NaN, INF, Infinity: spelt without a dot or an e
    except ValueError:
        return BadNumber(value, "not a number")
    return BadNumber(value, "not a number" if number != number else "too large")


_COLUMNS: dict[str, int] = {}
"""Column letters -> index, filled as met (at most EXCEL_MAX_COLUMNS entries)."""
_DIGITS = "0123456789"


def cell_coordinate(coordinate: str) -> tuple[int, int]:
    """openpyxl's coordinate_to_tuple, cached by column letters and refusing columns past XFD."""
    letters = coordinate.rstrip(_DIGITS)
    column = _COLUMNS.get(letters)
    if column is None:
        row, column = coordinate_to_tuple(coordinate)
        if column > EXCEL_MAX_COLUMNS:
            raise LimitExceeded(f"cell {coordinate} is past Excel's last column (XFD)")
        if letters.isalpha():
            _COLUMNS[letters] = column
        return row, column
    return int(coordinate[len(letters) :]), column


class BoundedSheetParser(_openpyxl_sheet_parser.WorkSheetParser):
    """openpyxl's read-only worksheet parser, failing at a row past Excel's last, and keeping no row
    dimensions (read-only iteration never uses them, and a row with a height or a style would add one
    dict per row: memory growing with the file)."""

    row_counter: int
    col_counter: int

    def parse_row(self, row: Element) -> tuple[int, list[dict[str, Any]]]:
        r = row.get("r")
        if r is None:
            self.row_counter += 1
        else:
            try:
                self.row_counter = int(r)
            except ValueError:
                number = float(r)
                if not number.is_integer():
                    raise ValueError(f"{r} is not a valid row number") from None
                self.row_counter = int(number)
        if self.row_counter > EXCEL_MAX_ROWS:
            raise row_past_limit(part_name(self.source), r)
        self.col_counter = 0
        cells = [self.parse_cell(element) for element in row]
        if self.col_counter > EXCEL_MAX_COLUMNS:  # cells without a reference, counted on
            raise row_too_wide(part_name(self.source), self.row_counter, self.col_counter)
        return self.row_counter, cells


def read_shared_strings(xml_source: Any, limits: Limits) -> list[str]:
    """openpyxl's read_string_table, bounded: at most `max_shared_strings` strings and
    `max_shared_strings_mb` of XML (whatever the part's name), none longer than a cell may be, no text run
    held whole past MAX_TEXT_RUN_BYTES; and the emptied <si> elements are let go (openpyxl keeps them
    attached to the root: ~80 bytes a string)."""
    part = part_name(xml_source)
    max_bytes = limits.max_shared_strings_mb * MB
    strings: list[str] = []
    pull: Any = XMLPullParser(events=("start", "end"))  # typeshed types its events too loosely
    guard = TextRunGuard(part)
    root: Any = None
    fed = 0

    def take(element: Element) -> None:
        text = Text.from_tree(element).content
        if len(text) > EXCEL_MAX_CELL_CHARS:
            raise LimitExceeded(
                f"{part}: shared string {len(strings):,} has {len(text):,} characters "
                f"(a cell holds at most {EXCEL_MAX_CELL_CHARS:,})"
            )
        strings.append(text.replace("x005F_", ""))
        element.clear()
        if len(strings) > limits.max_shared_strings:
            raise LimitExceeded(
                f"{part}: more than {limits.max_shared_strings:,} shared strings "
                "(ingestion_max_shared_strings)"
            )

    while True:
        for event, element in pull.read_events():
            if event == "end":
                if element.tag == _SI_TAG:
                    take(element)
            elif root is None:
                root = element
        if root is not None:
            del root[:]  # finished strings are read; the one in progress lives on in the parser's stack
        data = xml_source.read(CHUNK_BYTES)
        if not data:
            break
        fed += len(data)
        if fed > max_bytes:
            raise LimitExceeded(
                f"{part}: shared strings over {limits.max_shared_strings_mb:,} MB "
                "(ingestion_max_shared_strings_mb)"
            )
        pull.feed(data)
        guard.fed(pull, len(data))
    pull.close()
    for event, element in pull.read_events():
        if event == "end" and element.tag == _SI_TAG:
            take(element)
    return strings


def install(limits: Limits) -> None:
    """Put the bounds into openpyxl (idempotent; the limits are the last ones given)."""
    _openpyxl_sheet_parser._cast_number = cast_number
    _openpyxl_sheet_parser.coordinate_to_tuple = cell_coordinate
    _openpyxl_read_only.WorkSheetParser = BoundedSheetParser

    def read_string_table(xml_source: Any) -> list[str]:
        return read_shared_strings(xml_source, limits)

    _openpyxl_excel.read_string_table = read_string_table
