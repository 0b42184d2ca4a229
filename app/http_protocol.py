"""uvicorn's httptools protocol with a bound on request heads: at most 16 KiB of request line and headers,
at most 100 header fields; past either, 431 problem+json and the connection is closed.

Why here: httptools keeps a header value in memory until its line ends, with no limit, and uvicorn adds none,
so one 64 MiB header grew a worker by 127 MB. h11 (uvicorn's other parser) bounds the head but costs more
CPU per request; this keeps httptools and bounds it from outside:
- exactly, from the parser's callbacks: the URL's fragments and every completed header (name + value);
- while a head is still arriving: every chunk received wholly inside it counts in full, so a head that never
  ends is cut off after 16 KiB plus at most two socket reads, whatever the parser holds.
`credit-approval serve` (the image's command, and `make bench`) runs it; tests/test_header_limits.py sends
raw sockets at a live server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.errors import PROBLEM_BASE, PROBLEM_JSON

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_FIELDS = 100

logger = logging.getLogger("app.http")


class HeadTooLarge(Exception):
    """Raised inside a parser callback; httptools turns it into a parse error, which ends in `_reject`."""


def _response_431(detail: str) -> bytes:
    body = json.dumps(
        {
            "type": PROBLEM_BASE + "headers-too-large",
            "title": "Request header fields too large",
            "status": 431,
            "detail": detail,
        }
    ).encode()
    return b"".join(
        [
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            b"content-type: " + PROBLEM_JSON.encode() + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class CoalescingTransport:
    """The connection's transport, but a response's head goes out with its body in one write.

    uvicorn writes a response's status line and headers, then its body, in two calls, so two syscalls
    and two wake-ups of the client per response: the head's write alone was about 5 % of an API worker's
    samples on view-loan (bench/PROFILING.md). Here a write that ends a head (CRLF CRLF) is held until the
    next write, which sends both at once (writelines: one writev, nothing copied), or until the end of the
    event loop's iteration, or a close, whichever is first: nothing is reordered or held longer. A body
    that happens to end with CRLF CRLF is held the same way, harmlessly.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif data[-4:] == b"\r\n\r\n":
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # between a message's first byte and the end of its headers
        self._began_in_chunk = False
        self._streamed = 0  # bytes of chunks received wholly inside the current head
        self._measured = 0  # URL + header bytes the parser has handed over for the current head
        self._fields = 0
        self._too_large: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Everything written on this connection goes through it, the protocol's own answers too, in order;
        # uvicorn's flow control keeps the socket's own transport (reading paused and resumed).
        self.transport = CoalescingTransport(transport)  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._began_in_chunk = False
        super().data_received(data)  # feeds the parser; the callbacks below run inside
        if self._too_large is not None or self.transport.is_closing():
            return
        if self._in_head and not self._began_in_chunk:
            self._streamed += len(data)
            if self._streamed > MAX_HEAD_BYTES:
                self._reject(f"The request line and headers exceed {MAX_HEAD_BYTES} bytes.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._began_in_chunk = True, True
        self._streamed = self._measured = self._fields = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > MAX_HEADER_FIELDS:
            self._too_large = f"The request has more than {MAX_HEADER_FIELDS} header fields."
            raise HeadTooLarge
        self._count(len(name) + len(value) + 4)  # ": " and CRLF, as on the wire
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._measured += size
        if self._measured > MAX_HEAD_BYTES:
            self._too_large = f"The request line and headers exceed {MAX_HEAD_BYTES} bytes."
            raise HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parse error with 400; one raised by a limit above answers 431 instead.
        if self._too_large is not None:
            self._reject(self._too_large)
        else:
            super().send_400_response(msg)

    def _reject(self, detail: str) -> None:
        self._too_large = detail
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        logger.warning("431 from %s: %s", client, detail)
        self.transport.write(_response_431(detail))
        self.transport.close()
