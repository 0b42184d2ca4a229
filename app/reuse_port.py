"""A listening socket per uvicorn worker (SO_REUSEPORT), so the kernel spreads connections across workers.

Why: uvicorn binds one socket in its supervisor and every worker accepts from it. The worker whose event
loop wakes first drains the whole backlog, so connections opened together (a load balancer refilling its
pool, a client's connection pool) land unevenly: 64 opened at once split 22/42, 6/58, even 0/64 over two
workers (bench, 2026-12-04). The idle worker's core then sits unused while the other's queue sets every
latency. With SO_REUSEPORT each worker listens on a socket of its own and the kernel hashes each new
connection to one of them.

How, without replacing uvicorn's supervisor (which restarts dead workers and forwards signals): the
supervisor hands its socket to each worker it spawns by pickling it. `ReusePortSocket` pickles as its
address, so each worker unpickles a new socket of its own, bound with SO_REUSEPORT to the same address.
The supervisor's socket never listens, so the kernel routes nothing to it: it holds the port. It is bound
without SO_REUSEADDR, after uvicorn's own bind proved the port free, so a second server started on the same
port fails as before ("address already in use") instead of quietly sharing this one's connections.

The cost: connections still waiting in a worker's own backlog when that worker dies are reset, where a
shared socket would have let another worker take them.
"""

from __future__ import annotations

import socket
from typing import Any

from uvicorn import Config


class ReusePortSocket(socket.socket):
    def __reduce__(self) -> tuple[Any, ...]:
        return worker_socket, (self.family, self.getsockname())


def worker_socket(family: socket.AddressFamily, address: tuple[Any, ...]) -> socket.socket:
    """A worker's own socket on the supervisor's address (uvicorn makes it listen)."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the previous run's TIME_WAIT connections
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def supervisor_socket(config: Config) -> ReusePortSocket:
    """The socket to hand uvicorn's Multiprocess supervisor: the port proved free and logged by uvicorn's
    own bind (which exits with uvicorn's message and status when it is taken), then held for the workers."""
    probe = config.bind_socket()
    family, address = probe.family, probe.getsockname()
    probe.close()
    sock = ReusePortSocket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock
