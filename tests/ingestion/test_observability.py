"""An ingestion run through the real worker settings: rows counted by file and outcome, the job timed,
and the worker's log lines (ARQ's included) written as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from prometheus_client import REGISTRY

from app.config import Settings
from app.sample_data import generate
from tests.ingestion.conftest import Ingest

OUTCOMES = ("inserted", "updated", "unchanged", "skipped", "duplicates")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_an_ingestion_is_counted_timed_and_logged_as_json(
    ingest_settings: Settings, redis: ArqRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = Ingest(ingest_settings.model_copy(update={"log_level": "INFO"}), redis)
    files = generate(tmp_path, customers=25, loans=120, seed=4)
    rows_before = {
        (kind, outcome): sample("ingestion_rows_total", file=kind, outcome=outcome)
        for kind in ("customers", "loans")
        for outcome in OUTCOMES
    }
    runs_before = sample("job_duration_seconds_count", job="ingest_workbooks", outcome="success")
    try:
        state = await runner(files.customers, files.loans)
    finally:
        await runner.forget()

    assert state.status == "complete" and state.report is not None
    for report in state.report.files:
        assert report.inserted > 0
        for outcome in OUTCOMES:
            counted = sample("ingestion_rows_total", file=report.file, outcome=outcome)
            assert counted == rows_before[(report.file, outcome)] + getattr(report, outcome), (
                report.file,
                outcome,
            )
    assert sample("job_duration_seconds_count", job="ingest_workbooks", outcome="success") == runs_before + 1

    # The worker's on_startup configured logging: ARQ's own job lines are JSON objects now.
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    arq_lines = [line for line in lines if line["logger"].startswith("arq")]
    assert any("ingest_workbooks" in line["message"] for line in arq_lines)
