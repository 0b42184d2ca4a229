"""The API's processes keep the memory a large response needs for the next one (app.malloc)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from app.malloc import keep_freed_memory

# Builds and frees a statement-sized bytes object (119 KiB) 1,000 times; prints the page faults it took.
_PROBE = """
import resource, sys
from app.malloc import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
data = b"x" * 119_000
for _ in range(50):
    bytes(bytearray(data))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(1000):
    bytes(bytearray(data))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def _page_faults(mode: str) -> int:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return int(done.stdout)


@glibc_only
def test_large_buffers_reuse_their_pages_once_tuned() -> None:
    untuned, tuned = _page_faults("untuned"), _page_faults("tuned")
    # glibc's defaults: each buffer's ~29 pages are given back and faulted in again.
    assert untuned > 10_000, untuned
    assert tuned < 500, tuned


def test_an_operators_malloc_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
