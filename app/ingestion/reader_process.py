"""The reader child process (app.ingestion.reader) as the job runs it: started per workbook, its frames
read as batches, its time and memory bounded, stopped whatever happens."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

from app.config import Settings
from app.credit.policy import POLICY, Policy
from app.import_locks import FileKind
from app.ingestion.job_state import IngestionFailed
from app.ingestion.reader import read_frame
from app.ingestion.report import BatchInfo
from app.ingestion.rows import WorkbookError
from app.ingestion.sheet import SheetHeader

READ_AHEAD_BYTES = 2 << 20
"""How far a reader process may run ahead of the writer (asyncio buffers up to twice this): ~60k loan
rows as CSV, enough to smooth the hand-over; more would only be memory."""
# The reader runs as `python -m app.ingestion.reader`: make sure the child finds this package.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


class ReaderProcess:
    """`python -m app.ingestion.reader` parsing one workbook on its own core, frames over its stdout.

    The pipe plus this side's read buffer (at most 2 x READ_AHEAD_BYTES) is the bounded queue between
    parsing and writing: when the writer falls behind, the child blocks on a full pipe.
    """

    def __init__(self, kind: FileKind, path: Path, settings: Settings, policy: Policy = POLICY) -> None:
        self.kind = kind
        self.path = path
        self.batch_rows = settings.ingestion_batch_rows
        # The reader's bounds on a hostile file, as its command-line options.
        self.limit_options = [
            f"--max-part-mb={settings.ingestion_max_part_mb}",
            f"--max-shared-strings-mb={settings.ingestion_max_shared_strings_mb}",
            f"--max-shared-strings={settings.ingestion_max_shared_strings}",
            f"--memory-mb={settings.ingestion_reader_memory_mb}",
            # The policy's limit rule, for files without an Approved Limit column.
            f"--limit-multiplier={policy.limit_income_multiplier}",
            f"--limit-rounding-unit={policy.limit_rounding_unit}",
        ]
        self._process: asyncio.subprocess.Process | None = None
        self.peak_rss_kb = 0  # the child's, once it finished the file (or failed it)

    async def __aenter__(self) -> Self:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.ingestion.reader",
            "--batch-rows",
            str(self.batch_rows),
            *self.limit_options,
            f"{self.kind}={self.path}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            limit=READ_AHEAD_BYTES,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [_PROJECT_ROOT, os.environ.get("PYTHONPATH")])),
            },
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            process.kill()  # the job failed or was cancelled mid-file: stop parsing
        await process.wait()

    async def _next(self) -> tuple[dict[str, Any], bytes]:
        assert self._process is not None and self._process.stdout is not None
        try:
            meta, payload = await read_frame(self._process.stdout)
        except asyncio.IncompleteReadError:
            code = await self._process.wait()
            raise IngestionFailed(f"the workbook reader exited unexpectedly (exit status {code})") from None
        if meta["type"] == "error":
            self.peak_rss_kb = meta.get("peak_rss_kb", self.peak_rss_kb)
            raise WorkbookError(meta["message"])
        return meta, payload

    async def header(self) -> SheetHeader:
        meta, _ = await self._next()
        return SheetHeader(**meta["files"][self.kind])

    async def batches(self) -> AsyncIterator[tuple[BatchInfo, bytes]]:
        while True:
            meta, payload = await self._next()
            if meta["type"] == "end":
                self.peak_rss_kb = meta["peak_rss_kb"]
                return
            yield BatchInfo.model_validate(meta), payload
