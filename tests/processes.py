"""The service's own commands run for real as child processes: `credit-approval serve`, the ARQ worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REDIS_URL

BIN = Path(sys.executable).parent


def environment(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        ARQ_QUEUE_NAME=f"credit-approval:processes:{os.getpid()}",  # nobody else's jobs
        WORKER_METRICS_PORT="0",
        API_KEYS="",
        **extra,
    )
    return env


def lines_until(process: subprocess.Popen[str], marker: str, timeout_s: float = 60) -> list[str]:
    """stderr lines up to and including the first that contains `marker`."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break  # exited
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never came; the process wrote: {lines}")


def serve(database_url: str, port: int, workers: int = 1, **extra: str) -> subprocess.Popen[str]:
    """`credit-approval serve`, by default with one worker process (so its pid is the one serving)."""
    command = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return subprocess.Popen(
        [str(BIN / "credit-approval"), *command],
        cwd=Path(__file__).resolve().parent.parent,
        env=environment(database_url, **extra),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def drain(process: subprocess.Popen[str]) -> None:
    """Keep reading the child's stderr so a full pipe never blocks its logging."""
    import threading

    def read() -> None:
        assert process.stderr is not None
        for _ in process.stderr:
            pass

    threading.Thread(target=read, daemon=True).start()
