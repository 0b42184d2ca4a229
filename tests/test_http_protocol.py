"""A response's head goes out with its body in one write (app.http_protocol.CoalescingTransport), and no
write is reordered or held past the event loop's iteration."""

from __future__ import annotations

import asyncio
from typing import Any

from app.http_protocol import CoalescingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    """What reached the socket's transport, call by call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(("writelines", [bytes(data) for data in list_of_data]))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


async def test_a_head_and_its_body_are_one_write() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket)
    transport.write(HEAD)
    assert socket.calls == []  # held for the body
    transport.write(b"{}")
    assert socket.calls == [("writelines", [HEAD, b"{}"])]
    await asyncio.sleep(0)  # the end of the iteration finds nothing left to send
    assert len(socket.calls) == 1


async def test_a_head_without_a_body_goes_out_at_the_end_of_the_iteration() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket)
    transport.write(HEAD)
    await asyncio.sleep(0)
    assert socket.calls == [("write", HEAD)]


async def test_other_writes_go_straight_through_in_order() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket)
    transport.write(b"chunk")
    transport.write(HEAD)
    transport.write(b"{}")
    transport.write(b"more")
    assert socket.calls == [("write", b"chunk"), ("writelines", [HEAD, b"{}"]), ("write", b"more")]


async def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket)
    transport.write(HEAD)
    transport.close()
    assert socket.calls == [("write", HEAD), ("close", None)]
    await asyncio.sleep(0)
    assert len(socket.calls) == 2  # the iteration's flush finds nothing, and writes nothing after close

    socket = RecordingTransport()
    transport = CoalescingTransport(socket)
    transport.write(HEAD)
    transport.abort()
    await asyncio.sleep(0)
    assert socket.calls == [("abort", None)]


async def test_a_head_held_when_the_connection_closes_is_not_written() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket)
    transport.write(HEAD)
    socket.closing = True  # the peer went away before the iteration ended
    await asyncio.sleep(0)
    assert socket.calls == []


async def test_everything_else_is_the_transports() -> None:
    transport = CoalescingTransport(RecordingTransport())
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert transport.is_closing() is False
