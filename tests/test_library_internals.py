"""The library internals the code leans on, one test each, so that an upgrade that moves one fails here by
name instead of somewhere downstream (or, worse, silently: several of these patches fall back quietly).
pyproject.toml caps each library at the newest release these tests have passed on."""

from __future__ import annotations

import inspect
import xml.etree.ElementTree as ElementTree

import fastapi.routing
import openpyxl
from openpyxl.reader import excel as openpyxl_excel
from openpyxl.worksheet import _read_only as openpyxl_read_only
from openpyxl.worksheet import _reader as openpyxl_sheet_parser
from prometheus_client import multiprocess
from sqlalchemy.pool import Pool, QueuePool
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.http_protocol import BoundedHttpToolsProtocol
from app.ingestion.workbook_limits import BoundedSheetParser
from app.retry import _FUNCTION_STACK


def test_fastapi_keeps_function_scoped_dependency_exit_stacks_under_our_key() -> None:
    # app/retry.py owns this exit stack so that the unit of work's commit happens inside a retry attempt.
    assert f'"{_FUNCTION_STACK}"' in inspect.getsource(fastapi.routing)


def test_openpyxl_sheet_parser_hooks_are_where_the_reader_patches_them() -> None:
    # app/ingestion/sheet.py swaps the sheet parser's iterparse; workbook_limits.py its number cast,
    # coordinate parser, the read-only worksheet's parser class and the shared-strings reader.
    assert openpyxl.__version__.startswith("3.1.")
    assert openpyxl_sheet_parser.iterparse in (ElementTree.iterparse, _patched_iterparse())
    assert callable(openpyxl_sheet_parser._cast_number)
    assert callable(openpyxl_sheet_parser.coordinate_to_tuple)
    assert issubclass(BoundedSheetParser, openpyxl_sheet_parser.WorkSheetParser)
    assert openpyxl_read_only.WorkSheetParser in (openpyxl_sheet_parser.WorkSheetParser, BoundedSheetParser)
    assert "parse_row" in vars(openpyxl_sheet_parser.WorkSheetParser)
    assert callable(openpyxl_excel.read_string_table)


def _patched_iterparse() -> object:
    from app.ingestion import sheet

    return sheet._lean_iterparse


def test_elementtree_pull_parser_lets_the_reader_ask_for_end_events_only() -> None:
    pull = ElementTree.XMLPullParser(events=("end",))
    assert callable(getattr(pull._parser, "_setevents", None))  # type: ignore[attr-defined]
    assert hasattr(pull, "_events_queue")


def test_sqlalchemy_pool_invalidates_every_older_connection_on_request() -> None:
    # app/db.py calls Pool._invalidate on a lost connection, as SQLAlchemy's own disconnect handling does.
    parameters = list(inspect.signature(Pool._invalidate).parameters)
    assert parameters[:3] == ["self", "connection", "exception"]
    assert "_invalidate_time" in inspect.getsource(Pool._invalidate)
    assert issubclass(QueuePool, Pool)


def test_uvicorn_httptools_protocol_has_the_hooks_the_header_bound_overrides() -> None:
    for hook in (
        "data_received",
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "send_400_response",
    ):
        assert callable(getattr(HttpToolsProtocol, hook)), hook
        assert hook in vars(BoundedHttpToolsProtocol), hook
    assert "send_400_response" in inspect.getsource(HttpToolsProtocol.data_received)


def test_prometheus_multiprocess_files_are_named_by_mode_and_pid() -> None:
    # app/metrics.py reads the pid out of gauge_live*_<pid>.db to drop the files of killed processes.
    from prometheus_client import values

    assert "{}_{}.db" in inspect.getsource(values)
    assert "gauge_{mode}_{pid}.db" in inspect.getsource(multiprocess.mark_process_dead)
    assert {"livesum", "liveall"} <= multiprocess._LIVE_GAUGE_MULTIPROCESS_MODES
