"""`credit-approval serve` with several workers gives each its own listening socket (app.reuse_port), so
connections opened together spread across the workers instead of going to whichever woke first. Run for
real: the command as deployed, 64 connections at once, the sockets read from /proc."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator

import pytest

from app.devstack import free_port
from tests.conftest import migrated_database
from tests.processes import drain, lines_until, serve, stop

WORKERS = 2
CONNECTIONS = 64
_LISTEN, _ESTABLISHED = "0A", "01"


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    async with migrated_database("credit_reuse_port") as url:
        yield url


def sockets_on(port: int, state: str) -> set[int]:
    """Inodes of this machine's IPv4 TCP sockets in `state` whose local port is `port`."""
    inodes = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
                inodes.add(int(fields[9]))
    return inodes


def sockets_of(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(int(match[1]))
    return inodes


async def open_and_ask(port: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """CONNECTIONS connections opened together, each answered once, all left open."""
    pairs = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(CONNECTIONS)))
    for _, writer in pairs:
        writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    heads = await asyncio.gather(*(reader.readuntil(b"\r\n\r\n") for reader, _ in pairs))
    assert all(head.startswith(b"HTTP/1.1 200") for head in heads), heads[:3]
    return pairs


async def test_each_worker_listens_on_its_own_socket_and_takes_a_share(database_url: str) -> None:
    port = free_port()
    process = serve(database_url, port, workers=WORKERS)
    try:
        lines = lines_until(process, "Application startup complete")
        lines += lines_until(process, "Application startup complete")  # one line per worker
        drain(process)
        pids = [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", "\n".join(lines))]
        assert len(pids) == WORKERS, lines
        # One shared socket would be one LISTEN entry; the supervisor's own socket is bound, never listening.
        listening = sockets_on(port, _LISTEN)
        assert len(listening) == WORKERS
        assert all(len(listening & sockets_of(pid)) == 1 for pid in pids)

        pairs = await open_and_ask(port)
        try:
            established = sockets_on(port, _ESTABLISHED)
            shares = sorted(len(established & sockets_of(pid)) for pid in pids)
            assert sum(shares) == CONNECTIONS, shares
            # The kernel hashes each connection to a socket: a binomial split of 64, whose chance of
            # leaving a worker fewer than 16 is about 1 in 30,000. The shared socket gave 0/64 and 6/58.
            assert shares[0] >= 16, shares
        finally:
            for _, writer in pairs:
                writer.close()
    finally:
        stop(process)


def test_a_second_server_on_the_same_port_fails_instead_of_sharing_it(database_url: str) -> None:
    port = free_port()
    first = serve(database_url, port, workers=WORKERS)
    try:
        lines_until(first, "Application startup complete")
        drain(first)
        second = serve(database_url, port, workers=WORKERS)
        try:
            _, errors = second.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            stop(second)
            raise
        assert second.returncode == 3, errors
        assert "Address already in use" in errors
    finally:
        stop(first)
