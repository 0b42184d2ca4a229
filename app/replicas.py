"""Streaming replicas for the single-statement reads: which of them may serve, checked in the background.

The Reader (app.db) sends a read bound to the pool to `pick()`'s replica, else to the primary. What may
serve is decided here, every `replica_check_interval_s`, never per request:

- down: the check could not reach it, or a read on it lost its connection (out at once, back at the next
  check that reaches it);
- not_standby: it answers but is not in recovery (a promoted ex-replica has its own history: never read);
- lagging: further behind the primary than `replica_max_lag_ms`;
- ok: serves reads.

Lag is time, not bytes: each check samples the primary's WAL position (pg_current_wal_lsn) with the time
it was read, and a replica's lag is the age of the oldest sample it has not replayed yet (0 when it has
replayed them all). Unlike now() - pg_last_xact_replay_timestamp(), this does not grow while the primary
is idle, and a write the replica is about to replay counts for milliseconds, not for the idle time
before it. It is accurate to one check interval. When the primary cannot be reached the replicas keep
serving at their last known lag: the reads they answer cannot be staler than the last write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.config import Settings
from app.db import checkout_and_fetch, create_engine

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0
# pg_lsn minus pg_lsn is a byte count (numeric): the WAL position as a plain number.
_PRIMARY_POSITION = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
_REPLICA_POSITION = "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"


class ReplicaState(StrEnum):
    UNKNOWN = "unknown"  # not checked yet: no reads
    OK = "ok"
    LAGGING = "lagging"
    DOWN = "down"
    NOT_STANDBY = "not_standby"


@dataclass(eq=False)
class Replica:
    name: str  # host:port/database, never the password
    engine: AsyncEngine
    state: ReplicaState = ReplicaState.UNKNOWN
    lag_ms: float | None = None
    error: str | None = None

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {"name": self.name, "state": self.state.value, "lag_ms": self.lag_ms}
        if self.error:
            report["error"] = self.error
        return report


def replica_name(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


class Replicas:
    """The configured replicas, their states, and the round-robin over those that may serve."""

    def __init__(
        self,
        primary: AsyncEngine,
        members: Sequence[Replica],
        *,
        max_lag_ms: float,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.members = list(members)
        self.max_lag_ms = max_lag_ms
        self.interval_s = interval_s
        self._clock = clock
        self._serving: tuple[AsyncEngine, ...] = ()
        self._turn = 0
        # (time read, primary WAL position), oldest first: a few minutes of checks (a replica further
        # behind than that is reported at their age, far over any sensible max lag).
        self._positions: deque[tuple[float, int]] = deque(maxlen=1_024)
        self._task: asyncio.Task[None] | None = None

    def pick(self) -> AsyncEngine | None:
        """The next replica that may serve a read, or None (read on the primary)."""
        serving = self._serving
        if not serving:
            return None
        self._turn = turn = (self._turn + 1) % len(serving)
        return serving[turn]

    def read_failed(self, engine: AsyncEngine, error: BaseException, *, out: bool) -> None:
        """A read failed on `engine` and goes to the primary; when the replica is `out` (unreachable, or
        unable to serve), no more reads go there until a check finds it well again."""
        for member in self.members:
            if member.engine is not engine:
                continue
            metrics.replica_read_failed(member.name)
            if out and member.state is not ReplicaState.DOWN:
                logger.warning("replica %s down: %s; reads go elsewhere", member.name, type(error).__name__)
                member.state, member.error = ReplicaState.DOWN, type(error).__name__
                self._publish()

    async def check(self) -> None:
        """One round of checks: the primary's position, then every replica's, at once. Never raises."""
        now = self._clock()
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                rows = await checkout_and_fetch(self.primary, _PRIMARY_POSITION, ())
            self._positions.append((now, int(rows[0][0])))
        except Exception as error:  # the replicas keep their last known lag (see the module's doc)
            logger.debug("replica check: primary unreachable (%s)", type(error).__name__)
        await asyncio.gather(*(self._check(member, now) for member in self.members))
        self._publish()

    async def _check(self, member: Replica, now: float) -> None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                rows = await checkout_and_fetch(member.engine, _REPLICA_POSITION, ())
        except Exception as error:
            if member.state is not ReplicaState.DOWN:
                logger.warning("replica %s down: %s", member.name, type(error).__name__)
            member.state, member.lag_ms, member.error = ReplicaState.DOWN, None, type(error).__name__
            return
        in_recovery, replayed = rows[0]
        member.error = None
        if not in_recovery or replayed is None:
            member.state, member.lag_ms = ReplicaState.NOT_STANDBY, None
            return
        member.lag_ms = lag = self._lag_ms(int(replayed), now)
        state = ReplicaState.OK if lag <= self.max_lag_ms else ReplicaState.LAGGING
        if state is not member.state:
            logger.info("replica %s %s (lag %.0f ms)", member.name, state.value, lag)
        member.state = state

    def _lag_ms(self, replayed: int, now: float) -> float:
        # The oldest primary position not replayed yet: its age is the lag. Positions only grow.
        for read_at, position in self._positions:
            if position > replayed:
                return round((now - read_at) * 1000, 1)
        return 0.0

    def _publish(self) -> None:
        self._serving = tuple(m.engine for m in self.members if m.state is ReplicaState.OK)
        for member in self.members:
            metrics.replica_state(member.name, member.state is ReplicaState.OK, member.lag_ms)

    def report(self) -> list[dict[str, Any]]:
        return [member.report() for member in self.members]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replica-checks")

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for member in self.members:
            metrics.untrack_engine(member.engine)
        await asyncio.gather(*(member.engine.dispose() for member in self.members))


def create_replicas(settings: Settings, primary: AsyncEngine) -> Replicas | None:
    """The replicas of DATABASE_REPLICA_URLS, each with a pool as large as the primary's; None when unset."""
    urls = settings.replica_url_list
    if not urls:
        return None
    members = [Replica(replica_name(url), create_engine(settings, url=url)) for url in urls]
    for member in members:
        metrics.track_engine(member.engine)  # db_pool_checked_out_connections counts their pools too
    return Replicas(
        primary,
        members,
        max_lag_ms=settings.replica_max_lag_ms,
        interval_s=settings.replica_check_interval_s,
    )
