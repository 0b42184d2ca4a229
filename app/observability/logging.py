"""Logging set-up: one JSON object per line (or a readable line with LOG_FORMAT=console), on stderr.

Configured once per process: in the app's lifespan and in the worker's on_startup. Every line carries the
request id (and the route, or the job) of the work that emitted it, read from the log context.

Nothing here logs bodies or query strings; as a safety net for exception texts (a database error may quote
a row), any standalone 10-digit number, the shape of a phone number, is masked in messages and tracebacks.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from app.observability.context import current

ACCESS_LOGGER = "app.access"
_HANDLER_MARK = "_credit_approval_handler"
# LogRecord's own attributes: everything else in record.__dict__ came from `extra=` and is emitted.
# uvicorn's `color_message` is its message again with terminal colour codes: noise in a log pipeline.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}
_PHONE_LIKE = re.compile(r"(?<!\d)\d{10}(?!\d)")
_MASK = "[redacted]"


def mask_phone_numbers(text: str) -> str:
    return _PHONE_LIKE.sub(_MASK, text)


_second: int = -1
_second_text = ""


def _timestamp(created: float) -> str:
    """ISO 8601, UTC, milliseconds: `2026-06-15T12:00:00.123Z`. The seconds part is formatted once a
    second: every log line and every access line takes one."""
    global _second, _second_text
    second = int(created)
    if second != _second:
        _second_text = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = second
    return f"{_second_text}.{int((created - second) * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record besides timestamp, level, logger and message."""
    fields: dict[str, Any] = {}
    context = current()
    if context is not None:
        if context.request_id is not None:
            fields["request_id"] = context.request_id
        route = context.route
        if route is not None:
            fields["route"] = route
        if context.job is not None:
            fields["job"] = context.job
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRS and not key.startswith("_"):
            fields[key] = mask_phone_numbers(value) if isinstance(value, str) else value
    return fields


class JsonFormatter(logging.Formatter):
    """timestamp (ISO 8601, UTC), level, logger, message, request_id, route, status, duration_ms, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_phone_numbers(record.getMessage()),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc_info"] = mask_phone_numbers(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """For people at a terminal: `time LEVEL logger [request id] message key=value...`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        request_id = fields.pop("request_id", "-")
        extras = " ".join(f"{key}={value}" for key, value in fields.items())
        line = (
            f"{_timestamp(record.created)} {record.levelname:<7} {record.name} [{request_id}] "
            f"{mask_phone_numbers(record.getMessage())}"
        )
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + mask_phone_numbers(self.formatException(record.exc_info))
        return line


class LineWriter:
    """One thread writes every log line to the stream, whole batches at a time: a slow or stalled log pipe
    never blocks the event loop, and a busy server makes one write per batch, not one per line."""

    _STOP = object()
    MAX_BATCH = 1024
    # After the first line of a batch the thread waits this long for more: one wake-up and one write per
    # interval under load, instead of a thread switch and a write syscall per request. Lines are late by
    # at most this much. Each wake-up takes the GIL from the event loop: measured in `make bench`-like
    # paired runs, 10 ms (100 wake-ups a second) cost the deployed API 35-46 µs a request; see
    # bench/PROFILING.md.
    LINGER_S = 0.1

    def __init__(self, stream: TextIO) -> None:
        self._lines: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._stream = stream
        self.put = self._lines.put  # the caller's whole cost per line
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        lines, stream, stop, linger = self._lines, self._stream, self._STOP, self.LINGER_S
        backlog = False  # the last batch was full: more lines are waiting, write them without lingering
        while True:
            line = lines.get()
            if line is not stop and not backlog:
                time.sleep(linger)
            batch: list[object] = []
            flushed: list[threading.Event] = []
            while line is not stop:
                if isinstance(line, threading.Event):
                    flushed.append(line)  # set once the lines before it are written
                else:
                    batch.append(line)
                if len(batch) >= self.MAX_BATCH:
                    break
                try:
                    line = lines.get_nowait()
                except queue.Empty:
                    break
            backlog = len(batch) >= self.MAX_BATCH
            if batch:
                try:
                    stream.write("\n".join(batch) + "\n")  # type: ignore[arg-type]
                    stream.flush()
                except (OSError, ValueError):
                    pass  # a closed or broken stream: the lines are lost, the service goes on
            for event in flushed:
                event.set()
            if line is stop:
                return

    def flush(self, timeout: float = 5.0) -> None:
        """Return once every line queued so far has been written."""
        written = threading.Event()
        self._lines.put(written)
        written.wait(timeout)

    def stop(self) -> None:
        """Write out every queued line, then end the thread."""
        self._lines.put(self._STOP)
        self._thread.join(timeout=10)


class _WriterHandler(logging.Handler):
    """Formats on the caller (the request's context lives in its contextvars); the writer thread writes."""

    def __init__(self, writer: LineWriter, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._put = writer.put

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._put(self.format(record))
        except Exception:
            self.handleError(record)


_writer: LineWriter | None = None
_access_sink: Callable[[str], None] | None = None


def flush_log_writer() -> None:
    """Wait until every line logged so far is written (the app's shutdown; tests reading stderr)."""
    if _writer is not None:
        _writer.flush()


def stop_log_writer() -> None:
    """Write out every queued line and stop the writer thread (at exit, and before reconfiguring)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


def configure_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route every logger through one handler on the root logger. Idempotent: a second call replaces the
    handler installed by the first, and leaves other handlers (pytest's caplog) alone.

    Without `stream` lines go to stderr through a writer thread; with one (tests, tools) they are
    written synchronously."""
    global _writer, _access_sink
    root = logging.getLogger()
    for installed in list(root.handlers):
        if getattr(installed, _HANDLER_MARK, False):
            root.removeHandler(installed)
    stop_log_writer()
    formatter = ConsoleFormatter() if fmt == "console" else JsonFormatter()
    handler: logging.Handler
    sink: Callable[[str], None]
    if stream is None:
        _writer = LineWriter(sys.stderr)
        handler = _WriterHandler(_writer, formatter)
        sink = _writer.put
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        sink = _synchronous_sink(stream)
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The access line's fast path (access_line below): JSON at INFO. Console lines go through logging.
    info = logging.getLevelName(level.upper()) <= logging.INFO
    _access_sink = sink if fmt == "json" and info else None

    # uvicorn and arq install their own handlers and formats; send their lines through ours instead.
    for name in ("uvicorn", "uvicorn.error", "arq"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Our middleware writes the access log (route templates, never query strings). A uvicorn.access logger
    # without handlers makes uvicorn skip its own; `uvicorn --no-access-log` says the same explicitly.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False


def _synchronous_sink(stream: TextIO) -> Callable[[str], None]:
    def write(line: str) -> None:
        stream.write(line + "\n")

    return write


# --- the access line --------------------------------------------------------------------------------
# One per request: built as one string on the request path, no LogRecord, no dict, no json.dumps, and
# handed to the writer thread. The same fields and order as a JSON line from JsonFormatter (test_logging
# compares the two). Route templates and methods are ours; a request id is printable ASCII (context.py),
# escaped only when it holds a quote or a backslash.


def access_line(method: str, route: str, status: int, duration_ms: float, request_id: str) -> bool:
    """Write the request's JSON access line; False when the fast path is off (console format, tests
    with their own handler, or a level above INFO), and the caller logs through `logging` instead."""
    sink = _access_sink
    if sink is None:
        return False
    rid = json.dumps(request_id) if '"' in request_id or "\\" in request_id else f'"{request_id}"'
    sink(
        f'{{"timestamp": "{_timestamp(time.time())}", "level": "INFO", "logger": "{ACCESS_LOGGER}", '
        f'"message": "{method} {route} {status}", "request_id": {rid}, "route": "{route}", '
        f'"method": "{method}", "status": {status}, "duration_ms": {duration_ms}}}'
    )
    return True


atexit.register(stop_log_writer)


def _dict_config(fmt: str, loggers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    formatter = (
        "app.observability.logging.ConsoleFormatter"
        if fmt == "console"
        else "app.observability.logging.JsonFormatter"
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ours": {"()": formatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "ours", "stream": "ext://sys.stderr"}
        },
        "loggers": loggers,
    }


def uvicorn_log_config(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """uvicorn's `log_config`: its own lines ("Started server process", "Uvicorn running on") come out in
    our format from the first one, before the app's lifespan routes everything through configure_logging."""
    return _dict_config(
        fmt,
        {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            # The app writes the access log itself (app.observability.middleware).
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    )


def arq_log_config(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """For `arq --custom-log-dict`: ARQ's start lines in our format, before the worker's on_startup."""
    return _dict_config(fmt, {"arq": {"handlers": ["stderr"], "level": level.upper(), "propagate": False}})
