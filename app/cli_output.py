"""How the CLI shows an ingestion job: live progress bars while it runs, then its report as tables with the
first rows of each list and where the rest are."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import typer
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from app.ingestion.job_state import IngestionReport, JobState

T = TypeVar("T")

SHOWN_ROWS = 20  # re-keyed rows / errors printed per file; `job --json` lists up to 100 of each
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# soft_wrap: a long path or message stays on one line, whatever the terminal width (greppable in logs).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def show_progress(
    progress: Progress, tasks: dict[str, TaskID], state: JobState | None, *, final: bool
) -> None:
    if state is not None and state.report is not None:
        for file in state.report.files:  # exact numbers from the report
            rate = file.rows_read / file.seconds if file.seconds else 0.0
            progress.update(
                tasks[file.file], completed=file.rows_read, total=file.rows_read or 1, rate=rate, stage="done"
            )
    elif state is not None and state.progress is not None:
        for moving in state.progress.files:
            done = moving.stage == "done"
            progress.update(
                tasks[moving.file],
                completed=moving.rows_read,
                total=(moving.rows_read or 1) if done else None,
                rate=moving.rows_per_s,
                stage=moving.stage,
            )
    if final:
        for task in progress.tasks:
            if task.total is None:
                progress.update(task.id, total=max(task.completed, 1), stage="stopped")


def print_state(state: JobState | None) -> int:
    if state is None:
        raise fail("no such job (or its report has expired)", EXIT_FAILED)
    out.print(f"job {state.job_id}: [bold]{state.status}[/bold]", highlight=False)
    if state.report is not None:
        print_report(state.report)
    elif state.progress is not None:
        for file in state.progress.files:
            out.print(
                f"  {file.file}: {file.stage}, {file.rows_read:,} rows read ({file.rows_per_s:,.0f} rows/s)"
            )
    if state.status == "failed":
        err.print(f"[red]error:[/red] {state.error or 'the job failed'}", highlight=False)
        return EXIT_FAILED
    return EXIT_OK


def print_report(report: IngestionReport) -> None:
    # One column per file, one row per figure: fits any terminal, however many digits.
    table = Table(title=f"Ingestion report ({report.seconds:.2f} s)", title_justify="left")
    table.add_column("")
    for f in report.files:
        table.add_column(f.file, justify="right")
    figures = (
        ("rows read", "rows_read"),
        ("inserted", "inserted"),
        ("updated", "updated"),
        ("unchanged", "unchanged"),
        ("skipped", "skipped"),
        ("duplicates", "duplicates"),
        ("re-keyed", "rekeyed"),
        ("adopted", "adopted"),
        ("serviced here", "serviced_here"),
    )
    for label, name in figures:
        table.add_row(label, *(f"{getattr(f, name):,}" for f in report.files))
    table.add_row("seconds", *(f"{f.seconds:.2f}" for f in report.files))
    out.print(table)
    for f in report.files:
        if f.ignored_columns:
            out.print(f"{f.file}: ignored columns: {', '.join(f.ignored_columns)}", highlight=False)
        if f.derived_columns:
            out.print(
                f"{f.file}: computed (absent from the file): {', '.join(f.derived_columns)}", highlight=False
            )
        if f.rekeyed_customers:
            _list_rows(
                f"{f.file}: {f.rekeyed:,} customers re-keyed (their Customer ID was held by a customer "
                "no import created):",
                f.rekeyed_customers,
                lambda c: (
                    f"row {c.row}: Customer ID {c.workbook_customer_id} (held by customer "
                    f"{c.held_by_customer_id}) -> customer_id {c.customer_id}"
                ),
                f.rekeyed,
                "customers: source_customer_id <> customer_id",
            )
        if f.rekeyed_loans:
            _list_rows(
                f"{f.file}: {f.rekeyed:,} loans re-keyed (their Loan ID was held by another loan):",
                f.rekeyed_loans,
                lambda loan: (
                    f"row {loan.row}: customer {loan.customer_id}, Loan ID {loan.workbook_loan_id} "
                    f"(held by customer {loan.held_by_customer_id}) -> loan_id {loan.loan_id}"
                ),
                f.rekeyed,
                "loans: source_loan_id <> loan_id",
            )
        if f.serviced_here_loans:
            _list_rows(
                f"{f.file}: {f.serviced_here:,} loans left as they are: they have payments through the API, "
                "whose ledger the import does not override:",
                f.serviced_here_loans,
                lambda serviced: (
                    f"row {serviced.row}: customer {serviced.customer_id}, Loan ID "
                    f"{serviced.workbook_loan_id} -> loan_id {serviced.loan_id}"
                ),
                f.serviced_here,
                "loans: last_paid_on IS NOT NULL",
            )
        if f.errors:
            out.print(f"{f.file}: {f.skipped:,} rows skipped:")
            for e in f.errors[:SHOWN_ROWS]:
                value = "" if e.value is None else f" (value {e.value!r})"
                out.print(f"  {e.sheet} row {e.row}, {e.column}: {e.reason}{value}", highlight=False)
            _more(len(f.errors), len(f.errors) + f.errors_not_shown)
        if f.duplicate_rows:
            out.print(f"{f.file}: {f.duplicates:,} rows superseded by a later row with the same key:")
            for d in f.duplicate_rows[:SHOWN_ROWS]:
                key = f"customer {d.customer_id}" + (
                    f", Loan ID {d.loan_id}" if d.loan_id is not None else ""
                )
                out.print(f"  row {d.row} ({key}) -> row {d.kept_row}", highlight=False)
            _more(len(f.duplicate_rows), f.duplicates)


def _list_rows(header: str, rows: Sequence[T], line: Callable[[T], str], total: int, table_has: str) -> None:
    """A header, the first SHOWN_ROWS rows (one line each), and where the rest are."""
    out.print(header)
    for row in rows[:SHOWN_ROWS]:
        out.print(f"  {line(row)}", highlight=False)
    _more(len(rows), total, table_has)


def _more(listed: int, total: int, table_has: str | None = None) -> None:
    """After the first SHOWN_ROWS of `listed` rows (the report lists at most 100 of `total`): say
    where the rest are, exactly."""
    in_json = listed - min(listed, SHOWN_ROWS)
    beyond = total - listed
    if in_json > 0:
        out.print(f"  ... and {in_json:,} more listed by `credit-approval job ID --json`", highlight=False)
    if beyond > 0:
        where = f" (in the database: {table_has})" if table_has else ""
        out.print(f"  ... and {beyond:,} more counted, not listed{where}", highlight=False)
