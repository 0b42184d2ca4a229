"""Log format and level from the settings, the JSON and console shapes, and the phone-number mask."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from httpx import ASGITransport, AsyncClient

from app.config import Settings
from app.main import create_app
from app.observability.context import LogContext, bind, unbind
from app.observability.logging import configure_logging, stop_log_writer


@pytest.fixture(autouse=True)
def restore_logging(settings: Settings) -> Iterator[None]:
    yield
    configure_logging(settings.log_level, settings.log_format)


def emit(logger: str, level: int, message: str, *args: object, **extra: object) -> None:
    logging.getLogger(logger).log(level, message, *args, extra=extra)


def test_stderr_lines_are_written_by_a_thread_with_the_callers_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    configure_logging("INFO", "json")
    token = bind(LogContext("trace-queued"))
    try:
        emit("app.example", logging.WARNING, "queued %s", "line", file="loans")
    finally:
        unbind(token)
    stop_log_writer()  # drains the queue

    line = json.loads(stderr.getvalue())
    assert (line["message"], line["request_id"], line["level"], line["file"]) == (
        "queued line",
        "trace-queued",
        "WARNING",
        "loans",
    )


def test_json_lines_have_the_documented_fields() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    token = bind(LogContext("trace-json"))
    try:
        emit("app.example", logging.INFO, "loaded %d rows", 3, file="customers", duration_ms=1.5)
    finally:
        unbind(token)

    line = json.loads(stream.getvalue())
    assert line["level"] == "INFO"
    assert line["logger"] == "app.example"
    assert line["message"] == "loaded 3 rows"
    assert line["request_id"] == "trace-json"
    assert (line["file"], line["duration_ms"]) == ("customers", 1.5)
    # ISO 8601, UTC, millisecond precision.
    assert len(line["timestamp"]) == len("2026-06-15T12:00:00.000Z") and line["timestamp"].endswith("Z")


def test_console_format_is_for_people() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "console", stream=stream)
    emit("app.example", logging.WARNING, "disk %s", "low", status=507)

    text = stream.getvalue().rstrip("\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert " WARNING app.example [-] disk low" in text
    assert text.endswith("status=507")


def test_level_comes_from_the_settings() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "json", stream=stream)
    emit("app.example", logging.INFO, "hidden")
    emit("app.example", logging.WARNING, "shown")
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["shown"]


def test_configuring_twice_keeps_one_handler() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=io.StringIO())
    configure_logging("INFO", "json", stream=stream)
    emit("app.example", logging.INFO, "once")
    assert len(stream.getvalue().splitlines()) == 1


def test_phone_numbers_are_masked_in_messages_extras_and_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        raise ValueError("duplicate key value violates unique constraint: (phone_number)=(9876543210)")
    except ValueError:
        logging.getLogger("app.example").exception(
            "insert of 9876543210 failed", extra={"phone": "9876543210"}
        )

    text = stream.getvalue()
    assert "9876543210" not in text
    line = json.loads(text)
    assert line["message"] == "insert of [redacted] failed"
    assert line["phone"] == "[redacted]"
    assert "(phone_number)=([redacted])" in line["exc_info"]


def test_longer_numbers_are_not_masked() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    emit("app.example", logging.INFO, "amount 123456789012.50 for loan 1001")
    assert json.loads(stream.getvalue())["message"] == "amount 123456789012.50 for loan 1001"


async def test_the_app_configures_logging_from_its_settings(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(settings.model_copy(update={"log_format": "console", "log_level": "INFO"}))
    client = AsyncClient(transport=ASGITransport(app=app), base_url="http://test")
    async with app.router.lifespan_context(app), client:
        await client.get("/health", headers={"X-Request-ID": "trace-console"})
    err = capsys.readouterr().err
    access = next(line for line in err.splitlines() if "app.access" in line)
    assert " INFO    app.access [trace-console] GET /health 200" in access
    assert "route=/health" in access and "duration_ms=" in access


def test_uvicorn_access_log_is_replaced_by_ours() -> None:
    configure_logging("INFO", "json", stream=io.StringIO())
    # uvicorn decides per connection with hasHandlers(); False means it formats no access line at all.
    assert not logging.getLogger("uvicorn.access").hasHandlers()
    assert logging.getLogger("uvicorn.error").hasHandlers()  # its errors still go through our handler


def test_an_unknown_log_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")


def test_the_access_line_is_the_json_line_the_formatter_would_write() -> None:
    from app.observability.logging import ACCESS_LOGGER, JsonFormatter, access_line

    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    assert access_line("GET", "/api/view-loan/{loan_id}", 200, 1.25, 'id "quoted" \\ 9876543210')
    fast = json.loads(stream.getvalue())

    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, "%s %s %s", None, None)
    record.args = ("GET", "/api/view-loan/{loan_id}", 200)
    record.__dict__.update(route="/api/view-loan/{loan_id}", method="GET", status=200, duration_ms=1.25)
    token = bind(LogContext('id "quoted" \\ 9876543210'))
    try:
        slow = json.loads(JsonFormatter().format(record))
    finally:
        unbind(token)
    assert list(fast) == list(slow)  # the same fields in the same order
    assert {k: v for k, v in fast.items() if k != "timestamp"} == {
        k: v for k, v in slow.items() if k != "timestamp"
    }
    assert len(fast["timestamp"]) == len("2026-06-15T12:00:00.000Z") and fast["timestamp"].endswith("Z")


def test_access_lines_go_through_the_writer_thread_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.observability.logging import access_line

    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    configure_logging("INFO", "json")
    for n in range(2_000):
        assert access_line("GET", "/health", 200, 0.5, f"req-{n}")
    stop_log_writer()  # drains

    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [f"req-{n}" for n in range(2_000)]


def test_the_writer_writes_whatever_has_queued_up_in_one_write() -> None:
    import threading

    from app.observability.logging import LineWriter

    release = threading.Event()
    writes: list[str] = []

    class SlowPipe(io.StringIO):
        def write(self, text: str) -> int:
            release.wait(10)  # the first write stalls, as a full pipe would
            writes.append(text)
            return len(text)

    writer = LineWriter(SlowPipe())
    for n in range(3_000):
        writer.put(f"line {n}")  # never blocks, whatever the pipe does
    release.set()
    writer.stop()
    assert "".join(writes).splitlines() == [f"line {n}" for n in range(3_000)]
    assert len(writes) <= 1 + 3_000 // LineWriter.MAX_BATCH + 1  # batches, not a write per line


def test_a_backlog_is_written_without_lingering_between_full_batches() -> None:
    """The writer lingers before a batch so a busy server wakes it rarely; a full batch means more lines
    are waiting, and those go out at once: 20 full batches take about one linger, not twenty."""
    import time

    from app.observability.logging import LineWriter

    writer = LineWriter(io.StringIO())
    lines = 20 * LineWriter.MAX_BATCH
    started = time.monotonic()
    for n in range(lines):
        writer.put(f"line {n}")
    writer.flush()
    elapsed = time.monotonic() - started
    writer.stop()
    assert elapsed < 10 * LineWriter.LINGER_S, elapsed


def test_no_access_line_above_info_or_in_console_format() -> None:
    from app.observability.logging import access_line

    configure_logging("WARNING", "json", stream=io.StringIO())
    assert not access_line("GET", "/health", 200, 0.5, "r")
    configure_logging("INFO", "console", stream=io.StringIO())
    assert not access_line("GET", "/health", 200, 0.5, "r")
