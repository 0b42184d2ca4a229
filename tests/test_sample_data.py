"""The sample workbook generator: deterministic, shaped like the export, internally consistent."""

from __future__ import annotations

import datetime as dt
import zipfile
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook

from app.credit.dates import add_months
from app.credit.policy import approved_limit_for
from app.sample_data import (
    CUSTOMER_HEADERS,
    LOAN_HEADERS,
    SHEET_NAME,
    generate,
    iter_loan_rows,
    monthly_installment,
    write_workbook,
)


def read(path: Path) -> tuple[tuple[object, ...], list[tuple[object, ...]]]:
    workbook = load_workbook(path, read_only=True)
    try:
        rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()
    return rows[0], [row for row in rows[1:] if any(value is not None for value in row)]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    files = generate(tmp_path_factory.mktemp("sample"), customers=500, loans=3_000, seed=7)
    return files.customers, files.loans


def test_headers_and_sizes_match_the_real_export(sample: tuple[Path, Path]) -> None:
    customers_path, loans_path = sample
    customer_header, customers = read(customers_path)
    loan_header, loans = read(loans_path)
    assert customer_header == CUSTOMER_HEADERS
    assert loan_header == LOAN_HEADERS
    assert (len(customers), len(loans)) == (500, 3_000)
    assert load_workbook(loans_path, read_only=True).sheetnames == [SHEET_NAME]


def test_same_seed_same_values_other_seed_other_values(tmp_path: Path, sample: tuple[Path, Path]) -> None:
    again = generate(tmp_path / "again", customers=500, loans=3_000, seed=7)
    other = generate(tmp_path / "other", customers=500, loans=3_000, seed=8)
    assert read(again.customers) == read(sample[0])
    assert read(again.loans) == read(sample[1])
    assert read(other.loans)[1] != read(sample[1])[1]


def test_customers_are_realistic_with_unique_phones(sample: tuple[Path, Path]) -> None:
    _, customers = read(sample[0])
    assert [row[0] for row in customers] == list(range(1, 501))
    phones = [row[4] for row in customers]
    assert len(set(phones)) == len(phones)
    for _id, first, last, age, phone, salary, limit in customers:
        assert isinstance(first, str) and first and isinstance(last, str) and last
        assert isinstance(age, int) and 21 <= age <= 70
        assert isinstance(phone, int) and 6_000_000_000 <= phone < 10_000_000_000
        assert isinstance(salary, int) and salary % 1000 == 0 and 25_000 <= salary < 300_000
        assert Decimal(limit) == approved_limit_for(Decimal(salary))  # type: ignore[arg-type]


def test_loan_rows_are_consistent(sample: tuple[Path, Path]) -> None:
    _, loans = read(sample[1])
    for customer_id, _loan_id, amount, tenure, rate, payment, paid, start, end in loans:
        assert 1 <= customer_id <= 500  # type: ignore[operator]
        assert isinstance(start, dt.datetime) and isinstance(end, dt.datetime)
        assert end.date() == add_months(start.date(), tenure)  # type: ignore[arg-type]
        assert 0 <= paid <= tenure  # type: ignore[operator]
        expected = monthly_installment(Decimal(amount), Decimal(str(rate)), tenure)  # type: ignore[arg-type]
        assert payment == int(expected)


def test_some_loan_ids_repeat_under_another_customer_never_the_same_pair(
    sample: tuple[Path, Path],
) -> None:
    _, loans = read(sample[1])
    by_id = Counter(row[1] for row in loans)
    repeated = {loan_id for loan_id, count in by_id.items() if count > 1}
    # 29/782 of 3,000 rows is ~111; the draw is random, so allow a wide band, but not zero.
    assert 60 <= len(repeated) <= 170
    assert max(by_id.values()) == 2
    pairs = Counter((row[0], row[1]) for row in loans)
    assert max(pairs.values()) == 1
    for loan_id in repeated:
        holders = {row[0] for row in loans if row[1] == loan_id}
        assert len(holders) == 2


def test_repeat_share_is_configurable() -> None:
    rows = list(iter_loan_rows(2_000, customers=50, seed=1, repeat_share=0.0))
    assert len({row[1] for row in rows}) == 2_000
    rows = list(iter_loan_rows(2_000, customers=50, seed=1, repeat_share=0.5))
    assert len({row[1] for row in rows}) < 1_600


def test_the_file_records_its_dimension_like_excel_does(sample: tuple[Path, Path]) -> None:
    # Without it openpyxl's read-only loader scans the whole sheet to size it: benchmarks would lie.
    with zipfile.ZipFile(sample[1]) as archive:
        head = archive.open("xl/worksheets/sheet1.xml").read(2_000)
    assert b'<dimension ref="A1:I3001"/>' in head
    assert load_workbook(sample[1], read_only=True).worksheets[0].max_row == 3_001


def test_trailing_empty_rows_and_progress(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    path = tmp_path / "t.xlsx"
    written = write_workbook(
        path, ("A", "B"), iter([(1, 2), (3, 4)]), trailing_empty_rows=3, progress=lambda *a: seen.append(a)
    )
    assert written == 2
    assert seen[-1] == ("t.xlsx", 2)
    workbook = load_workbook(path, read_only=True)
    assert workbook.worksheets[0].max_row == 6
    assert not path.with_name("t.xlsx.part").exists()


def test_monthly_payment_is_the_policys_emi_in_whole_rupees() -> None:
    assert monthly_installment(Decimal(100_000), Decimal(12), 12) == Decimal(8885)  # 8,884.88
    assert monthly_installment(Decimal(1_200), Decimal(0), 12) == Decimal(100)
