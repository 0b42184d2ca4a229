"""The ingestion job end to end: real workbooks, a real ARQ worker, real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from openpyxl import load_workbook
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.ingestion.jobs import ingest_workbooks
from app.main import create_app
from app.sample_data import generate
from tests.ingestion.conftest import (
    CUSTOMER_HEADERS,
    LOAN_HEADERS,
    REAL_CUSTOMERS,
    REAL_LOANS,
    Ingest,
    customer,
    dump,
    loan,
    require_real_workbooks,
    rows,
    run_worker,
    scalar,
    write_xlsx,
)
from worker import shutdown, startup

# ARQ's Worker.close() still calls redis-py's deprecated close(); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


def real_loans() -> list[tuple[Any, ...]]:
    workbook = load_workbook(REAL_LOANS, read_only=True)
    data = [r for r in workbook.worksheets[0].iter_rows(min_row=2, values_only=True) if r[0] is not None]
    workbook.close()
    return data


def by_file(state: Any) -> dict[str, Any]:
    assert state.report is not None, state
    return {f.file: f for f in state.report.files}


async def test_the_real_workbooks_load_completely(ingest: Ingest, db: AsyncEngine) -> None:
    require_real_workbooks()
    state = await ingest(REAL_CUSTOMERS, REAL_LOANS)
    assert state.status == "complete", state.error
    files = by_file(state)
    customers, loans = files["customers"], files["loans"]
    assert (customers.rows_read, customers.inserted, customers.skipped) == (300, 300, 0)
    assert (loans.rows_read, loans.inserted, loans.skipped, loans.duplicates) == (782, 782, 0, 0)

    # Ages, and the file's own limits (they do not follow the 36x rule): customer 1 is (63, 4,500,000).
    assert await scalar(db, "SELECT count(*) FROM customers WHERE age IS NOT NULL") == 300
    assert tuple((await rows(db, "SELECT age, approved_limit FROM customers WHERE customer_id = 1"))[0]) == (
        63,
        Decimal("4500000.00"),
    )

    # Every workbook loan is there, under its own (customer, Loan ID).
    workbook = real_loans()
    stored = await rows(db, "SELECT customer_id, source_loan_id, loan_id, monthly_installment FROM loans")
    assert {(r.customer_id, r.source_loan_id) for r in stored} == {(r[0], r[1]) for r in workbook}
    payments = {(r.customer_id, r.source_loan_id): r.monthly_installment for r in stored}
    assert all(payments[(r[0], r[1])] == Decimal(r[5]) for r in workbook)  # stored as given

    # 29 Loan IDs repeat under another customer: the first in file order keeps it, the later one is
    # re-keyed above every workbook id, and the report names each with the holder.
    assert loans.rekeyed == 29 and len(loans.rekeyed_loans) == 29
    first_holder: dict[int, int] = {}
    for customer_id, loan_id, *_ in workbook:
        first_holder.setdefault(loan_id, customer_id)
    expected = {(r[0], r[1]) for r in workbook if first_holder[r[1]] != r[0]}
    assert {(x.customer_id, x.workbook_loan_id) for x in loans.rekeyed_loans} == expected
    assert all(x.held_by_customer_id == first_holder[x.workbook_loan_id] for x in loans.rekeyed_loans)
    assert sorted(x.loan_id for x in loans.rekeyed_loans) == list(range(9997, 9997 + 29))
    assert sum(1 for r in stored if r.loan_id != r.source_loan_id) == 29
    assert [x.row for x in loans.rekeyed_loans] == sorted(x.row for x in loans.rekeyed_loans)

    # The sequences are past the largest ids: the next identity values collide with nothing.
    assert await scalar(db, "SELECT nextval(pg_get_serial_sequence('customers', 'customer_id'))") == 301
    assert await scalar(db, "SELECT nextval(pg_get_serial_sequence('loans', 'loan_id'))") == 9997 + 29


async def test_a_second_run_changes_nothing(ingest: Ingest, db: AsyncEngine) -> None:
    require_real_workbooks()
    assert (await ingest(REAL_CUSTOMERS, REAL_LOANS)).status == "complete"
    before = await dump(db)
    again = await ingest(REAL_CUSTOMERS, REAL_LOANS, force=True)
    assert again.status == "complete", again.error
    files = by_file(again)
    assert (files["customers"].inserted, files["customers"].updated, files["customers"].unchanged) == (
        0,
        0,
        300,
    )
    assert (files["loans"].inserted, files["loans"].updated, files["loans"].unchanged) == (0, 0, 782)
    assert files["loans"].rekeyed == 29  # still stored under their fresh ids, and still listed
    assert await dump(db) == before  # same rows, same row versions (xmin), same sequences


async def test_register_and_create_loan_work_right_after(
    ingest: Ingest, db: AsyncEngine, ingest_settings: Settings
) -> None:
    require_real_workbooks()
    assert (await ingest(REAL_CUSTOMERS, REAL_LOANS)).status == "complete"
    app = create_app(ingest_settings)
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
    ):
        registered = await client.post(
            "/api/register",
            json={
                "first_name": "New",
                "last_name": "Customer",
                "age": 35,
                "monthly_income": 100_000,
                "phone_number": 9_123_456_789,
            },
        )
        assert registered.status_code == 201, registered.text
        assert registered.json()["customer_id"] == 301
        created = await client.post(
            "/api/create-loan",
            json={"customer_id": 301, "loan_amount": 100_000, "interest_rate": 14, "tenure": 12},
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["loan_approved"] is True, body
        assert body["loan_id"] == 9997 + 29
    # And a plain INSERT relying on the identity columns, as any other writer would.
    async with db.begin() as conn:
        new_customer = (
            await conn.execute(
                text(
                    "INSERT INTO customers (first_name, last_name, phone_number, monthly_salary,"
                    " approved_limit) VALUES ('S', 'Q', 9111111111, 1, 1) RETURNING customer_id"
                )
            )
        ).scalar_one()
        new_loan = (
            await conn.execute(
                text(
                    "INSERT INTO loans (customer_id, loan_amount, tenure, interest_rate, monthly_installment,"
                    " start_date, end_date, outstanding_principal, repayments_left)"
                    " VALUES (1, 1, 1, 1, 1, '2024-01-01', '2024-02-01', 1, 1) RETURNING loan_id"
                )
            )
        ).scalar_one()
    assert (new_customer, new_loan) == (302, 9997 + 30)


async def test_header_variants_serial_dates_extra_columns_and_trailing_rows(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    customers = write_xlsx(
        tmp_path / "c.xlsx",
        ["customer_id", "first_name", "last_name", "Age", "Phone Number", "Monthly Salary", "current_debt"],
        [[1, "A", "B", 40, 9_000_000_001, 62_500, 5], [2, "C", "D", None, 9_000_000_002, 30_000, 0]],
        trailing_empty_rows=10,
    )
    loans = write_xlsx(
        tmp_path / "l.xlsx",
        [
            "Customer Id",
            "Loan ID",
            "Loan Amount",
            "Tenure",
            "Interest Rate",
            "monthly_repayment",
            "EMIs paid on Time",
            "start_date",
            "End Date",
            "current_debt",
        ],
        [
            [1, 500, 100_000, 12, 9.99, 8_791.59, 12, 43845, 44211, 1],
            [2, 501, 50_000, 6, 0, 8_333.33, 0, dt.datetime(2022, 3, 31), dt.datetime(2022, 9, 30), 0],
        ],
        trailing_empty_rows=10,
    )
    state = await ingest(customers, loans)
    assert state.status == "complete", state.error
    files = by_file(state)
    assert files["customers"].ignored_columns == ["current_debt"]
    assert files["customers"].derived_columns == ["approved_limit"]
    assert files["loans"].ignored_columns == ["current_debt"]
    assert (files["customers"].rows_read, files["loans"].rows_read) == (2, 2)
    stored = await rows(db, "SELECT customer_id, age, approved_limit FROM customers ORDER BY customer_id")
    assert [tuple(r) for r in stored] == [(1, 40, Decimal("2300000.00")), (2, None, Decimal("1100000.00"))]
    stored = await rows(db, "SELECT * FROM loans ORDER BY loan_id")
    assert [
        (r.loan_id, r.start_date, r.end_date, r.interest_rate, r.monthly_installment) for r in stored
    ] == [
        (500, dt.date(2020, 1, 15), dt.date(2021, 1, 15), Decimal("9.99"), Decimal("8791.59")),
        (501, dt.date(2022, 3, 31), dt.date(2022, 9, 30), Decimal("0.00"), Decimal("8333.33")),
    ]


async def test_bad_rows_are_reported_and_the_good_rows_load(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    customers = write_xlsx(
        tmp_path / "c.xlsx",
        CUSTOMER_HEADERS,
        [
            customer(1),
            customer(2, **{"Monthly Salary": -1}),
            customer(3),
            customer(4, **{"Phone Number": None}),
        ],
    )
    bad = [
        (loan(99, 10), "Customer ID", "unknown customer 99"),
        (loan(2, 11), "Customer ID", "unknown customer 2"),  # its customer row was bad
        (loan(1, 12, **{"Loan Amount": "lots"}), "Loan Amount", "not a number"),
        (loan(1, 13, **{"Loan Amount": -100}), "Loan Amount", "must not be negative"),
        (loan(1, 14, **{"Tenure": None}), "Tenure", "missing value"),
        (loan(1, 15, **{"EMIs paid on Time": 20}), "EMIs paid on Time", "EMIs paid on time (20) exceed"),
        (loan(1, 16, **{"End Date": dt.datetime(2019, 12, 31)}), "End Date", "end date 2019-12-31 is before"),
    ]
    good = [loan(1, 1), loan(3, 2)]
    loans = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [good[0], *(r for r, _, _ in bad), good[1]])
    state = await ingest(customers, loans)
    assert state.status == "complete", state.error
    files = by_file(state)
    assert (files["customers"].inserted, files["customers"].skipped) == (2, 2)
    assert [(e.row, e.column) for e in files["customers"].errors] == [
        (3, "Monthly Salary"),
        (5, "Phone Number"),
    ]
    assert (files["loans"].inserted, files["loans"].skipped) == (2, len(bad))
    assert [
        (e.sheet, e.row, e.column, e.reason[: len(bad[i][2])]) for i, e in enumerate(files["loans"].errors)
    ] == [("Sheet1", index + 3, column, reason) for index, (_, column, reason) in enumerate(bad)]
    assert files["loans"].errors_not_shown == 0
    stored = await rows(db, "SELECT customer_id, loan_id FROM loans ORDER BY loan_id")
    assert [tuple(r) for r in stored] == [(1, 1), (3, 2)]


async def test_duplicate_keys_last_row_wins_and_is_reported(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    customers = write_xlsx(
        tmp_path / "c.xlsx",
        CUSTOMER_HEADERS,
        [customer(1), customer(2), customer(1, **{"Monthly Salary": 77_000})],
    )
    # Batches are 50 rows here: one duplicate inside a batch, one 120 rows later (another batch).
    filler = [loan(2, 1000 + i) for i in range(150)]
    loans = write_xlsx(
        tmp_path / "l.xlsx",
        LOAN_HEADERS,
        [
            loan(1, 7),
            loan(1, 7, **{"Loan Amount": 200_000}),
            *filler[:120],
            loan(1, 7, **{"Loan Amount": 300_000}),
            *filler[120:],
        ],
    )
    state = await ingest(customers, loans)
    assert state.status == "complete", state.error
    files = by_file(state)
    assert (files["customers"].inserted, files["customers"].duplicates) == (2, 1)
    assert [(d.row, d.kept_row, d.customer_id) for d in files["customers"].duplicate_rows] == [(2, 4, 1)]
    assert await scalar(db, "SELECT monthly_salary FROM customers WHERE customer_id = 1") == Decimal(77_000)
    assert (files["loans"].inserted, files["loans"].duplicates, files["loans"].rows_read) == (151, 2, 153)
    assert [(d.row, d.kept_row, d.loan_id) for d in files["loans"].duplicate_rows] == [(2, 3, 7), (3, 124, 7)]
    assert await scalar(db, "SELECT loan_amount FROM loans WHERE loan_id = 7") == Decimal(300_000)
    assert files["loans"].unchanged == 0 and files["loans"].updated == 0


async def test_loan_ids_held_by_existing_rows_or_earlier_rows_are_rekeyed(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    async with db.begin() as conn:  # a customer and a loan made through the API: identity ids, no source
        await conn.execute(insert_customer(customer(50)))
        await conn.execute(
            text(
                "INSERT INTO loans (loan_id, customer_id, loan_amount, tenure, interest_rate,"
                " monthly_installment, start_date, end_date, outstanding_principal, repayments_left)"
                " VALUES (5000, 50, 1, 1, 1, 1, '2024-01-01', '2024-02-01', 1, 1)"
            )
        )
    customers = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(1), customer(2), customer(3)])
    loans = write_xlsx(
        tmp_path / "l.xlsx",
        LOAN_HEADERS,
        [loan(1, 5000), loan(2, 9), loan(3, 9), loan(1, 9), loan(1, 20_000)],
    )
    state = await ingest(customers, loans)
    assert state.status == "complete", state.error
    rekeyed = by_file(state)["loans"].rekeyed_loans
    assert [(r.row, r.customer_id, r.workbook_loan_id, r.held_by_customer_id) for r in rekeyed] == [
        (2, 1, 5000, 50),  # held by the existing loan
        (4, 3, 9, 2),  # row 3 came first in the file
        (5, 1, 9, 2),
    ]
    # Fresh ids come after every Loan ID in the file (20,000), in file order.
    assert [r.loan_id for r in rekeyed] == [20_001, 20_002, 20_003]
    stored = await rows(db, "SELECT loan_id, customer_id, source_loan_id FROM loans ORDER BY loan_id")
    assert [tuple(r) for r in stored] == [
        (9, 2, 9),
        (5000, 50, None),
        (20_000, 1, 20_000),
        (20_001, 1, 5000),
        (20_002, 3, 9),
        (20_003, 1, 9),
    ]


def _sql(values: list[object]) -> list[str]:
    return ["NULL" if v is None else f"'{v}'" if isinstance(v, str) else str(v) for v in values]


def insert_customer(values: list[object], *, source_customer_id: int | None = None) -> Any:
    """INSERT for a `customer(...)` row: as registered through the API (no source id), or as imported."""
    columns = "customer_id, first_name, last_name, age, phone_number, monthly_salary, approved_limit"
    source = "NULL" if source_customer_id is None else str(source_customer_id)
    return text(
        f"INSERT INTO customers ({columns}, source_customer_id) VALUES ({', '.join(_sql(values))}, {source})"
    )


async def test_phone_numbers_stay_unique_rows_that_would_break_it_are_skipped(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    async with db.begin() as conn:
        await conn.execute(insert_customer(customer(50)))
    customers = write_xlsx(
        tmp_path / "c.xlsx",
        CUSTOMER_HEADERS,
        [
            customer(1),
            customer(2, **{"Phone Number": 9_000_000_001}),
            customer(3, **{"Phone Number": 9_000_000_050}),
        ],
    )
    loans = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [])
    state = await ingest(customers, loans)
    assert state.status == "complete", state.error
    files = by_file(state)
    assert (files["customers"].inserted, files["customers"].skipped) == (1, 2)
    assert [(e.row, e.column, e.reason) for e in files["customers"].errors] == [
        (3, "Phone Number", "phone number 9000000001 belongs to customer 1 (on row 2)"),
        (4, "Phone Number", "phone number 9000000050 belongs to customer 50 (already in the database)"),
    ]


async def test_a_corrupt_file_fails_the_job_and_writes_nothing(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    customers = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(1)])
    loans = tmp_path / "l.xlsx"
    loans.write_bytes(b"\x00garbage" * 100)
    state = await ingest(customers, loans)
    assert state.status == "failed"
    assert state.error is not None and "l.xlsx: not a readable .xlsx workbook" in state.error
    assert state.report is not None and state.report.files == []
    assert await scalar(db, "SELECT count(*) FROM customers") == 0


async def test_a_missing_column_fails_the_job_and_writes_nothing(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    customers = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(1)])
    loans = write_xlsx(tmp_path / "l.xlsx", [h for h in LOAN_HEADERS if h != "Tenure"], [loan(1, 1)[:3]])
    state = await ingest(customers, loans)
    assert state.status == "failed"
    assert state.error is not None and "missing the required column(s) 'Tenure'" in state.error
    assert await scalar(db, "SELECT count(*) FROM customers") == 0


async def test_a_file_that_breaks_midway_loads_nothing_of_itself(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    from tests.ingestion.test_reader import _rewrite_member

    files = generate(tmp_path, customers=20, loans=400, seed=3)
    _rewrite_member(files.loans, "xl/worksheets/sheet1.xml", b'<row r="300">', b'<row r="300"><c r="A300">')
    state = await ingest(files.customers, files.loans)
    assert state.status == "failed"
    assert state.error is not None and "damaged sheet" in state.error
    assert [f.file for f in state.report.files] == ["customers"]  # type: ignore[union-attr]
    assert await scalar(db, "SELECT count(*) FROM customers") == 20  # its own transaction, committed
    assert await scalar(db, "SELECT count(*) FROM loans") == 0  # several batches merged, all rolled back


async def test_the_same_job_run_twice_at_once_is_harmless(
    ingest: Ingest, db: AsyncEngine, ingest_settings: Settings, tmp_path: Path
) -> None:
    files = generate(tmp_path, customers=60, loans=700, seed=5)
    # ARQ delivers at least once: run the job function itself, twice, concurrently, with one context.
    ctx: dict[str, Any] = {"settings": ingest_settings, "redis": ingest.redis, "job_id": "twice"}
    await startup(ctx)
    try:
        first, second = await asyncio.gather(
            ingest_workbooks(ctx, str(files.customers), str(files.loans)),
            ingest_workbooks(ctx, str(files.customers), str(files.loans)),
        )
        twice = _content(await dump(db))
        async with db.begin() as conn:
            await conn.execute(text("TRUNCATE customers, loans RESTART IDENTITY CASCADE"))
        once = await ingest_workbooks(ctx, str(files.customers), str(files.loans))
    finally:
        await shutdown(ctx)
        await ingest.redis.delete(
            "credit-approval:ingestion:twice:progress", "credit-approval:ingestion:twice:report"
        )
    assert _content(await dump(db)) == twice
    inserted = sorted(
        f["inserted"] for report in (first, second) for f in report["files"] if f["file"] == "loans"
    )
    assert inserted[0] == 0 and inserted[1] == once["files"][1]["inserted"] > 600


def _content(snapshot: dict[str, Any]) -> tuple[Any, ...]:
    """Rows without xmin and created_at (which differ between two loads), and the sequences."""
    return (
        [row[1:-1] for row in snapshot["customers"]],
        [row[1:-1] for row in snapshot["loans"]],
        snapshot["sequences"],
    )


async def test_status_progress_and_deduplication(ingest: Ingest, db: AsyncEngine, tmp_path: Path) -> None:
    files = generate(tmp_path, customers=30, loans=260, seed=9)
    job_id, created = await ingest.enqueue(files.customers, files.loans)
    assert created
    assert (await ingest.state(job_id)).status == "queued"  # type: ignore[union-attr]
    _, again = await ingest.enqueue(files.customers, files.loans)
    assert again is False  # same content, same job: not queued twice
    copy = tmp_path / "copy.xlsx"
    shutil.copy(files.loans, copy)
    assert ingest.job_id(files.customers, copy) == job_id  # the id is the content, not the path
    state = await ingest(files.customers, files.loans)
    assert state.job_id == job_id and state.status == "complete"
    assert state.progress is not None
    assert [(p.file, p.stage, p.rows_read) for p in state.progress.files] == [
        ("customers", "done", 30),
        ("loans", "done", 260),
    ]
    assert state.report is not None and state.report.worker_peak_rss_mb and state.report.reader_peak_rss_mb
    _, after = await ingest.enqueue(files.customers, files.loans)
    assert after is False  # remembered for a day
    _, forced = await ingest.enqueue(files.customers, files.loans, force=True)
    assert forced is True
    assert await ingest.state("ingest-does-not-exist") is None


async def test_the_workers_event_loop_stays_responsive_while_parsing(
    ingest: Ingest, db: AsyncEngine, ingest_settings: Settings, tmp_path: Path
) -> None:
    files = generate(tmp_path, customers=2_000, loans=30_000, seed=11)
    ctx: dict[str, Any] = {"settings": ingest_settings, "redis": ingest.redis, "job_id": "responsive"}
    await startup(ctx)
    worst = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal worst
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - before - 0.01)

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    try:
        report = await ingest_workbooks(ctx, str(files.customers), str(files.loans))
    finally:
        done.set()
        await ticker
        await shutdown(ctx)
        keys = (
            "credit-approval:ingestion:responsive:progress",
            "credit-approval:ingestion:responsive:report",
        )
        await ingest.redis.delete(*keys)
    assert report["files"][1]["inserted"] == 30_000
    assert time.perf_counter() - started > 1  # long enough for a blocked loop to show
    # Parsing 30,000 rows in the loop's thread would stall it for seconds; a health check every 10 s
    # must never be late.
    assert worst < 0.5, f"event loop stalled for {worst:.2f} s"


async def test_a_huge_rekeyed_list_is_capped_and_counted(
    ingest: Ingest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.ingestion import customer_loader, loan_loader, staging

    for module in (staging, customer_loader, loan_loader):
        monkeypatch.setattr(module, "MAX_LISTED", 3)
    customers = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(1), customer(2)])
    loans = write_xlsx(
        tmp_path / "l.xlsx",
        LOAN_HEADERS,
        [loan(1, i) for i in range(1, 9)] + [loan(2, i) for i in range(1, 9)],
    )
    state = await ingest(customers, loans)
    files = by_file(state)
    assert files["loans"].rekeyed == 8
    assert [r.row for r in files["loans"].rekeyed_loans] == [10, 11, 12]
    assert files["loans"].rekeyed_not_shown == 5


async def test_a_customers_file_that_breaks_midway_loads_neither_file(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    from tests.ingestion.test_reader import _rewrite_member

    files = generate(tmp_path, customers=300, loans=400, seed=6)
    _rewrite_member(
        files.customers, "xl/worksheets/sheet1.xml", b'<row r="250">', b'<row r="250"><c r="A250">'
    )
    state = await ingest(files.customers, files.loans)
    assert state.status == "failed"
    assert state.error is not None and "customer_data.xlsx: damaged sheet" in state.error
    # The loans transaction had started (holding its rows until customers committed): rolled back too.
    assert await scalar(db, "SELECT count(*) FROM customers") == 0
    assert await scalar(db, "SELECT count(*) FROM loans") == 0


async def test_loans_read_before_the_customers_commit_are_held_then_loaded(
    db: AsyncEngine, tmp_path: Path
) -> None:
    from app.ingestion.loan_loader import LoanLoader
    from app.ingestion.reader import batch_meta, rows_to_csv, staged_rows
    from app.ingestion.report import BatchInfo
    from app.ingestion.rows import LOANS
    from app.ingestion.sheet import SheetReader

    async with db.begin() as conn:
        await conn.execute(insert_customer(customer(1), source_customer_id=1))
    path = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [loan(1, i) for i in range(1, 8)] + [loan(1, 3)])
    with SheetReader(path, LOANS) as reader:
        batches = list(reader.batches(3))
        header = reader.header
    customers_loaded = asyncio.Event()
    loader = LoanLoader(path, header, customers_loaded=customers_loaded)

    def info(batch: Any) -> BatchInfo:
        return BatchInfo.model_validate(batch_meta("loans", batch))

    async with db.begin() as conn:
        await loader.start(conn)
        for batch in batches[:2]:
            await loader.add_batch(
                BatchInfo.model_validate(batch_meta("loans", batch)),
                rows_to_csv(staged_rows("loans", batch.rows)),
            )
        assert loader.held == 6
        assert await conn.scalar(text("SELECT count(*) FROM loans")) == 0  # nothing placed yet
        customers_loaded.set()
        for batch in batches[2:]:
            await loader.add_batch(
                BatchInfo.model_validate(batch_meta("loans", batch)),
                rows_to_csv(staged_rows("loans", batch.rows)),
            )
        report = await loader.finish()
    assert (report.inserted, report.duplicates, report.rows_read) == (7, 1, 8)
    assert [(d.row, d.kept_row) for d in report.duplicate_rows] == [(4, 9)]
    assert await scalar(db, "SELECT count(*) FROM loans") == 7


async def test_force_starts_a_new_run_whatever_the_earlier_one_is_doing(
    ingest: Ingest, db: AsyncEngine, tmp_path: Path
) -> None:
    customers = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(1)])
    loans = write_xlsx(tmp_path / "l.xlsx", LOAN_HEADERS, [loan(1, 7)])
    first, created = await ingest.enqueue(customers, loans)
    assert created
    # Queued (no worker yet): a plain enqueue is a no-op, --force starts another run beside it.
    assert await ingest.enqueue(customers, loans) == (first, False)
    from app.ingestion.job_state import enqueue_ingestion

    forced = await enqueue_ingestion(
        ingest.redis, first, customers, loans, queue_name=ingest.settings.arq_queue_name, force=True
    )
    ingest.job_ids.append(forced.job_id)
    assert forced.created and forced.job_id.startswith(first + "-")
    assert f"the earlier run {first} is still queued" in forced.note and forced.job_id in forced.note
    await run_worker(ingest.settings)
    states = [await ingest.state(job_id) for job_id in (first, forced.job_id)]
    assert [s.status for s in states if s is not None] == ["complete", "complete"]
    assert await scalar(db, "SELECT count(*) FROM loans") == 1  # two runs, one load
    # Finished: --force reruns it under its own id.
    again = await enqueue_ingestion(
        ingest.redis, first, customers, loans, queue_name=ingest.settings.arq_queue_name, force=True
    )
    assert (again.job_id, again.created) == (first, True) and "had finished" in again.note


def test_the_cli_says_exactly_where_unlisted_rows_are(capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli_output import print_report
    from app.ingestion.job_state import IngestionReport
    from app.ingestion.report import DuplicateRow, FileReport

    report = FileReport(
        file="customers", path="c.xlsx", sheet="Sheet1", rows_read=300, inserted=1, updated=0,
        unchanged=0, skipped=0, duplicates=250, rekeyed=0, seconds=1.0,
        duplicate_rows=[DuplicateRow(row=r, kept_row=300, customer_id=1) for r in range(2, 102)],
        duplicates_not_shown=150,
    )  # fmt: skip
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    print_report(
        IngestionReport(
            job_id="j", status="complete", customers_path="c", loans_path="l",
            started_at=moment, finished_at=moment, seconds=1.0, files=[report],
        )
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "250 rows superseded" in printed
    assert "... and 80 more listed by `credit-approval job ID --json`" in printed  # 100 listed, 20 shown
    assert "... and 150 more counted, not listed" in printed
