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
from logging.handlers import QueueHandler, QueueListener
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


def _timestamp(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


_listener: QueueListener | None = None


def stop_log_writer() -> None:
    """Write out every queued line and stop the writer thread (at exit, and before reconfiguring)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def _queued_handler(formatter: logging.Formatter) -> logging.Handler:
    """Lines are formatted by the caller (the request's context lives in its contextvars) and written to
    stderr by a thread: a slow or stalled log pipe never blocks the event loop."""
    global _listener
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter("%(message)s"))  # already formatted by the QueueHandler
    _listener = QueueListener(lines, writer)
    _listener.start()
    handler = QueueHandler(lines)
    handler.setFormatter(formatter)
    return handler


def configure_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route every logger through one handler on the root logger. Idempotent: a second call replaces the
    handler installed by the first, and leaves other handlers (pytest's caplog) alone.

    Without `stream` lines go to stderr through a writer thread; with one (tests, tools) they are
    written synchronously."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    stop_log_writer()
    formatter = ConsoleFormatter() if fmt == "console" else JsonFormatter()
    if stream is None:
        handler = _queued_handler(formatter)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())

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


atexit.register(stop_log_writer)


def _dict_config(level: str, fmt: str, loggers: dict[str, dict[str, Any]]) -> dict[str, Any]:
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
        level,
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
    return _dict_config(
        level, fmt, {"arq": {"handlers": ["stderr"], "level": level.upper(), "propagate": False}}
    )
