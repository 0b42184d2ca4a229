"""Request heads are bounded (app/http_protocol.py): over 16 KiB of request line and headers, or over 100
header fields, gets 431 problem+json and a closed connection, and a head that never ends is cut off early,
so the process does not grow. Raw sockets against `credit-approval serve` running for real."""

from __future__ import annotations

import asyncio
import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from app.devstack import free_port
from app.http_protocol import MAX_HEAD_BYTES, MAX_HEADER_FIELDS
from tests.conftest import create_migrated_database, drop_database
from tests.processes import drain, lines_until, serve, stop


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, int]]:
    """(port, pid) of a live server with one process."""
    name, url = asyncio.run(create_migrated_database("credit_headers"))
    port = free_port()
    process = serve(url, port)
    try:
        lines_until(process, "Uvicorn running on")
        drain(process)
        yield port, process.pid
    finally:
        stop(process)
        asyncio.run(drop_database(name))


def exchange(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a whole request head, read the whole response (the server closes, or Content-Length says)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, sock.makefile("rb") as stream:
        sock.sendall(head)
        return read_response(stream)


def read_response(stream: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One response from a buffered stream of the socket: bytes past its end (a pipelined response that
    came in the same segment) stay in the buffer for the next call."""
    status_line = stream.readline()
    assert status_line, "closed without a response"
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def request(*headers: bytes, target: bytes = b"/health") -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return b"GET " + target + b" HTTP/1.1\r\nHost: test\r\n" + lines + b"\r\n"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_431(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 431, body
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem = json.loads(body)
    assert problem["status"] == 431 and problem["type"].endswith("/headers-too-large"), problem


def test_a_head_just_under_the_limits_is_served(server: tuple[int, int]) -> None:
    port, _ = server
    fields = [b"X-F%d: v" % i for i in range(MAX_HEADER_FIELDS - 2)]  # + Host + the one below
    filler = MAX_HEAD_BYTES - 1024 - sum(len(f) + 2 for f in fields)
    status, _, body = exchange(port, request(*fields, b"X-Big: " + b"a" * filler))
    assert status == 200, body


def test_one_header_over_16_kib_gets_431(server: tuple[int, int]) -> None:
    port, _ = server
    assert_431(*exchange(port, request(b"X-Big: " + b"a" * MAX_HEAD_BYTES)))


def test_a_url_over_16_kib_gets_431(server: tuple[int, int]) -> None:
    port, _ = server
    assert_431(*exchange(port, request(target=b"/health?q=" + b"a" * MAX_HEAD_BYTES)))


def test_more_than_100_fields_get_431(server: tuple[int, int]) -> None:
    port, _ = server
    fields = [b"X-F%d: v" % i for i in range(MAX_HEADER_FIELDS)]  # + Host = 101
    assert_431(*exchange(port, request(*fields)))


def test_a_head_that_never_ends_is_cut_off_and_the_process_does_not_grow(server: tuple[int, int]) -> None:
    port, pid = server
    before = rss_kib(pid)
    sent = 0
    piece = b"a" * 4096
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: ")
        # Up to 64 MiB of one header value, until the server answers.
        while sent < 64 * 1024 * 1024:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        sock.settimeout(10)
        try:
            with sock.makefile("rb") as stream:
                response = read_response(stream)
        except ConnectionResetError:
            pytest.fail(f"reset without a 431 after {sent} bytes")
    assert_431(*response)
    # Cut off long before the end (what was sent includes what the kernel's socket buffers took, a few MB
    # on loopback), and the process kept at most 16 KiB and a read or two of it.
    assert sent < 32 * 1024 * 1024, sent
    assert rss_kib(pid) - before < 4 * 1024, (before, rss_kib(pid))


def test_keep_alive_requests_after_a_large_body_are_not_mistaken_for_a_large_head(
    server: tuple[int, int],
) -> None:
    port, _ = server
    body = json.dumps({"first_name": "A" * 60_000}).encode()
    post = (
        b"POST /api/register HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, sock.makefile("rb") as stream:
        # Both in one write: the second head arrives in the same read as the first body, and the two
        # answers often come back in one segment (a reader that dropped the bytes past the first answer's
        # Content-Length waited here for the keep-alive timeout, 1 run in 7).
        sock.sendall(post + request())
        first_status, _, first_body = read_response(stream)
        second_status, _, second_body = read_response(stream)
    assert first_status == 422, first_body[:300]
    assert second_status == 200, second_body


def test_pipelined_requests_get_whole_responses_in_order(server: tuple[int, int]) -> None:
    """Every write goes through app.http_protocol.CoalescingTransport, which holds a response's head for
    its body: three requests sent at once (a 404, a 200, a 404) come back whole, in order."""
    port, _ = server
    heads = request(target=b"/api/view-loan/999999999") + request() + request(target=b"/api/view-loan/0")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, sock.makefile("rb") as stream:
        sock.sendall(heads)
        responses = [read_response(stream) for _ in range(3)]
    assert [status for status, _, _ in responses] == [404, 200, 422], responses
    bodies = [json.loads(body) for _, _, body in responses]
    assert (bodies[0]["status"], bodies[1]["status"], bodies[2]["status"]) == (404, "ok", 422), bodies
