"""Streaming one sheet: openpyxl in read-only mode, row by row, with its parser patched to let go of rows
once read and bounded by the workbook limits; headers mapped by normalised name; rows parsed into batches
of typed tuples and row errors. A sheet is never loaded whole nor sized by its recorded dimension (exports
often carry a wrong one, and trailing formatted-but-empty rows)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from xml.etree import ElementTree
from xml.etree.ElementTree import XMLPullParser

from openpyxl import load_workbook
from openpyxl.worksheet import _reader as _openpyxl_sheet_parser
from openpyxl.xml.constants import SHEET_MAIN_NS

from app.credit.policy import POLICY, Policy
from app.ingestion import workbook_limits
from app.ingestion.cells import Invalid, date
from app.ingestion.rows import MAX_REPORTED_ERRORS, Field, RowError, Schema, WorkbookError, normalise_header
from app.ingestion.workbook_limits import (
    EXCEL_MAX_COLUMNS,
    LimitExceeded,
    Limits,
    TextRunGuard,
    part_name,
    row_too_wide,
)

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
