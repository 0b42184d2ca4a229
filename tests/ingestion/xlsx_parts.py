"""Workbooks written part by part with zipfile: what openpyxl cannot write (hostile files), and large
plain ones fast (a streamed sheet of inline strings, no styles)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"


def _content_types(sheets: int, shared_strings: bool) -> str:
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        for i in range(1, sheets + 1)
    )
    if shared_strings:
        overrides += (
            '<Override PartName="/xl/sharedStrings.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        f"{overrides}</Types>"
    )


def _workbook(sheets: list[tuple[str, str]]) -> str:
    entries = "".join(
        f'<sheet name="{name}" sheetId="{i}" state="{state}" r:id="rId{i}"/>'
        for i, (name, state) in enumerate(sheets, start=1)
    )
    return f'<workbook xmlns="{NS}" xmlns:r="{REL_NS}"><sheets>{entries}</sheets></workbook>'


def _workbook_rels(sheets: int, shared_strings: bool) -> str:
    ws = f"{REL_NS}/worksheet"
    rels = "".join(
        f'<Relationship Id="rId{i}" Type="{ws}" Target="worksheets/sheet{i}.xml"/>'
        for i in range(1, sheets + 1)
    )
    if shared_strings:
        rels += f'<Relationship Id="rId999" Type="{REL_NS}/sharedStrings" Target="sharedStrings.xml"/>'
    return f'<Relationships xmlns="{PKG_REL_NS}">{rels}</Relationships>'


_ROOT_RELS = (
    f'<Relationships xmlns="{PKG_REL_NS}"><Relationship Id="rId1" '
    f'Type="{REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
)

Part = str | bytes | Iterable[bytes]
"""A part's content: text, bytes, or chunks streamed into the zip (so a 1 GiB part never exists whole)."""


def write_parts(
    path: Path,
    sheets: list[Part],
    *,
    shared_strings: Part | None = None,
    states: list[str] | None = None,
    extra: dict[str, Part] | None = None,
) -> Path:
    states = states or ["visible"] * len(sheets)
    names = [(f"Sheet{i}", state) for i, state in enumerate(states, start=1)]
    parts: dict[str, Part] = {
        "[Content_Types].xml": _content_types(len(sheets), shared_strings is not None),
        "_rels/.rels": _ROOT_RELS,
        "xl/workbook.xml": _workbook(names),
        "xl/_rels/workbook.xml.rels": _workbook_rels(len(sheets), shared_strings is not None),
    }
    for i, sheet in enumerate(sheets, start=1):
        parts[f"xl/worksheets/sheet{i}.xml"] = sheet
    if shared_strings is not None:
        parts["xl/sharedStrings.xml"] = shared_strings
    parts.update(extra or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, content in parts.items():
            if isinstance(content, str):
                content = content.encode()
            if isinstance(content, bytes):
                archive.writestr(name, content)
                continue
            with archive.open(name, "w", force_zip64=True) as stream:
                for chunk in content:
                    stream.write(chunk)
    return path


def cell_xml(ref: str, value: object) -> str:
    if isinstance(value, RawCell):
        return f'<c r="{ref}"{value.attributes}><v>{value.text}</v></c>'
    if isinstance(value, str):
        return f'<c r="{ref}" t="inlineStr"><is><t>{escape(value)}</t></is></c>'
    return f'<c r="{ref}"><v>{value}</v></c>'


@dataclass(frozen=True)
class RawCell:
    """A cell written exactly as given: `<v>NaN</v>`, `t="e"`."""

    text: str
    attributes: str = ""


def sheet_xml(rows: Iterable[tuple[int, list[object]]], tail: str = "") -> str:
    body = []
    for number, values in rows:
        cells = "".join(cell_xml(f"{_letter(i)}{number}", v) for i, v in enumerate(values) if v is not None)
        body.append(f'<row r="{number}">{cells}</row>')
    return f'<worksheet xmlns="{NS}"><sheetData>{"".join(body)}{tail}</sheetData></worksheet>'


def _letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def write_rows(path: Path, rows: Iterable[Iterable[object]]) -> Path:
    """A one-sheet workbook of `rows` (the first is the header), streamed: seconds for 200,000 rows where
    openpyxl's writer takes a minute. Numbers as numbers, everything else as inline text."""

    def chunks() -> Iterator[bytes]:
        yield f'<worksheet xmlns="{NS}"><sheetData>'.encode()
        lines = []
        for number, values in enumerate(rows, start=1):
            cells = "".join(
                cell_xml(f"{_letter(i)}{number}", v) for i, v in enumerate(values) if v is not None
            )
            lines.append(f'<row r="{number}">{cells}</row>')
            if len(lines) == 5_000:
                yield "".join(lines).encode()
                lines.clear()
        yield ("".join(lines) + "</sheetData></worksheet>").encode()

    return write_parts(path, [chunks()])
