"""The bundled HTTP load generator, for machines without wrk: closed-loop, keep-alive, N connections.

    python bench/loadgen.py SPEC.json   # prints one JSON line of results

SPEC: {"host", "port", "connections", "duration", "warmup", "requests": [[method, path, body|null], ...],
"distinct": bool}. Each connection sends its next request as soon as the previous answer is complete
(like wrk). Requests are taken in order from the list, wrapping around at its end, as bench/run.py's
wrk script does; `distinct` (create-loan: one customer per request) skips the warm-up, which would
use up the list.

Built to cost the server as little CPU as possible, since it shares the machine: one process (run it
apart from the benchmark's own), uvloop, asyncio Protocols on raw sockets, requests encoded up front, and
responses parsed only as far as the status line and Content-Length, and glibc's malloc told to keep freed
memory (app.malloc: a statement's 85 KiB otherwise cost the generator 65 µs more per response, faulting
its buffer's pages in again). It reports its own CPU time per request so a run can show the generator was
not the bottleneck.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import sys
import time
from array import array
from collections import Counter
from typing import Any

from app.malloc import keep_freed_memory

_HEADER_END = b"\r\n\r\n"


def encode(host: str, port: int, method: str, path: str, body: Any) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: credit-bench\r\n"
    if body is None:
        return (head + "\r\n").encode()
    payload = json.dumps(body, separators=(",", ":")).encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


class Connection(asyncio.Protocol):
    """One keep-alive connection: write a request, parse the answer, hand the status to a future."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._parse()

    def _parse(self) -> None:
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(_HEADER_END)
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        length = 0
        # Only Content-Length framing: uvicorn sends it for every JSON response.
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        del self.buffer[:total]
        self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed by the server"))

    async def request(self, payload: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], int(spec["port"])
    payloads = [encode(host, port, m, p, b) for m, p, b in spec["requests"]]
    distinct = bool(spec.get("distinct"))
    gc.disable()  # a collection mid-run would show up as the generator's latency, not the server's
    connections = int(spec["connections"])
    loop = asyncio.get_running_loop()
    protocols = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(Connection, host, port)
        protocols.append(protocol)

    latencies = array("d")
    statuses: Counter[int] = Counter()
    errors = 0
    next_index = 0
    recording = False
    stop_at = 0.0

    async def drive(connection: Connection) -> None:
        nonlocal next_index, errors
        while time.perf_counter() < stop_at:
            payload = payloads[next_index % len(payloads)]
            next_index += 1
            started = time.perf_counter()
            try:
                status = await connection.request(payload)
            except ConnectionError:
                errors += 1
                return
            if recording:
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1

    warmup = float(spec.get("warmup", 0))
    if warmup > 0 and not distinct:
        stop_at = time.perf_counter() + warmup
        await asyncio.gather(*(drive(c) for c in protocols))
    recording = True
    cpu_started = time.process_time()
    started = time.perf_counter()
    stop_at = started + float(spec["duration"])
    await asyncio.gather(*(drive(c) for c in protocols))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    for protocol in protocols:
        if protocol.transport is not None:
            protocol.transport.close()

    ordered = sorted(latencies)
    count = len(ordered)

    def percentile(q: float) -> float:
        return ordered[min(count - 1, int(q * count))] * 1000 if count else float("nan")

    return {
        "requests": count,
        "seconds": elapsed,
        "rps": count / elapsed if elapsed else 0.0,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "max_ms": ordered[-1] * 1000 if count else float("nan"),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "generator_cpu_us_per_request": cpu / count * 1e6 if count else float("nan"),
        "generator_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    keep_freed_memory()
    try:
        import uvloop

        result = uvloop.run(run(spec))
    except ImportError:  # uvloop comes with uvicorn[standard]; plain asyncio still works, more slowly
        result = asyncio.run(run(spec))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
