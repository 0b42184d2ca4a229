"""The reader child process (`python -m app.ingestion.reader`): streams the lender's workbooks, sheet by sheet
(app.ingestion.sheet), to the worker as COPY-ready batches over its stdout.

openpyxl's parsing is pure Python: in the worker's process it would hold the GIL the event loop and the
COPY writer need, and the whole load would take parse time + write time. In a child process it runs on
its own core while the worker writes the previous batch. The child writes frames to its stdout: a
4-byte meta length, a 4-byte payload length, JSON meta, payload (the batch's rows as CSV for COPY).
A full pipe blocks the child: that is the bounded queue between the two.

The modules it is made of: app.ingestion.cells (one cell's value), app.ingestion.rows (what a row is),
app.ingestion.sheet (one sheet, streamed), app.ingestion.workbook_limits (a hostile file's bounds).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import resource
import struct
import sys
from dataclasses import asdict, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from app.credit.policy import POLICY, Policy
from app.credit.schedule import imported_servicing
from app.ingestion import workbook_limits
from app.ingestion.rows import CUSTOMERS, LOANS, LoanRow, Schema, WorkbookError
from app.ingestion.sheet import Batch, SheetReader
from app.ingestion.workbook_limits import Limits

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
