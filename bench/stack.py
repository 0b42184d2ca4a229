"""What the benchmark runs on: the machine it describes and measures (CPU per process), the throw-away
databases and workbooks, and the processes it starts (the API as deployed, the floor, the worker)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import make_url

from bench import support
from bench.config import HOST, PYTHON, ROOT, log


def describe_machine(dsn: str) -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass

    async def server_version() -> str:
        connection = await asyncpg.connect(dsn)
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "postgresql": asyncio.run(server_version()),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def cpu_idle_percent(seconds: float = 1.0) -> float:
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]

    total_1, idle_1 = sample()
    time.sleep(seconds)
    total_2, idle_2 = sample()
    return 100.0 * (idle_2 - idle_1) / max(total_2 - total_1, 1)


def wait_for_quiet(threshold: float = 85.0, patience_s: float = 60.0) -> float:
    """Other work on the machine skews every figure: wait (a while) until it is mostly idle."""
    deadline = time.monotonic() + patience_s
    idle = cpu_idle_percent()
    while idle < threshold and time.monotonic() < deadline:
        idle = cpu_idle_percent()
    if idle < threshold:
        log(f"the machine is busy ({idle:.0f}% idle): figures will be low")
    return idle


def process_tree_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process and its children (the uvicorn supervisor and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [pid]
    with suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / tick


def postgres_cpu_s() -> float:
    """CPU seconds of every PostgreSQL process visible here (backends included); approximate: it counts
    whatever else the server is doing too. With each process's reaped children (cutime, cstime): a backend
    that exits mid-run moves its CPU into the postmaster's, where the sum still finds it (without them a
    pool closing connections took the sum down: -29 µs a request on the floor's view-loan once)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() not in ("postgres", "postmaster"):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        except (OSError, IndexError):
            pass
    return total / tick


# ------------------------------------------------------------------------------------------- databases


def dsn_of(url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(admin_url: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn_of(admin_url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def database(admin_url: str, label: str) -> Iterator[str]:
    """A new, migrated database next to the admin URL's; dropped afterwards."""
    name = f"credit_bench_{label}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate = subprocess.run(
            [PYTHON, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{migrate.stderr[-3000:]}")
        yield url
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def query(url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn_of(url))
    try:
        return list(await connection.fetch(statement, *args))
    finally:
        await connection.close()


def vacuum_analyze(url: str) -> None:
    # The steady state a live database reaches through autovacuum: visibility map set (index-only scans)
    # and statistics current. Both the service's and the floor's tables get it.
    asyncio.run(_admin(url, "VACUUM (ANALYZE)"))


def workbooks(customers: int, loans: int, seed: int = 0) -> tuple[Path, Path]:
    """The sample workbooks, generated once per size (the cache bench/ingest_bench.py uses too)."""
    return support.workbooks(customers, loans, seed, say=log)


# ----------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """A subprocess serving HTTP on a port; stopped (it and only it, by its own process group) on exit."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path, port: int) -> None:
        self.name, self.port = name, port
        self.logfile = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=self.logfile, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=2) as answer:
                    if answer.status < 500:
                        return
            except OSError as error:  # refused while starting; an HTTP error status means it is up
                if getattr(error, "code", 500) < 500:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start; see {self.logfile.name}:\n{self.tail()}")

    def tail(self) -> str:
        return Path(self.logfile.name).read_text(errors="replace")[-3000:]

    def cpu_s(self) -> float:
        return process_tree_cpu_s(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # our own session: only what we started
                self.process.wait()
        self.logfile.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_api(
    url: str, redis_url: str, workers: int, log_level: str = "INFO", replica_urls: str = ""
) -> Server:
    """The API as deployed: `credit-approval serve`, LOG_LEVEL=INFO (the default), so every request writes
    its JSON access line (to a file here, as to a pipe in a container). `log_level="WARNING"` is the
    logs-quiet variant, which shows what the access log costs; `replica_urls` its reads on replicas."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "WEB_CONCURRENCY": str(workers),
        "API_KEYS": "",
        "LOG_LEVEL": log_level,
        "DATABASE_REPLICA_URLS": replica_urls,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [
        PYTHON,
        "-m",
        "app.cli",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    server = Server("api", command, env, ROOT, port)
    server.wait_ready("/health")
    return server


def start_floor(floor: Path, url: str, workers: int) -> Server:
    port = free_port()
    env = {**os.environ, "RAW_DSN": dsn_of(url)}
    command = [
        PYTHON, "-m", "uvicorn", "raw_floor:app", "--host", HOST, "--port", str(port),
        "--workers", str(workers), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    server = Server("floor", command, env, floor.parent, port)
    server.wait_ready("/")
    return server


def ingest(url: str, redis_url: str, files: tuple[Path, Path]) -> dict[str, Any]:
    """Ingest through the real job: a worker subprocess and an enqueued ingestion, as production does."""
    from arq import create_pool
    from arq.connections import RedisSettings

    from app.config import Settings
    from app.ingestion.job_state import enqueue_ingestion, get_job_state, job_id_for, job_namespace

    queue = f"credit-approval-bench:{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=url, redis_url=redis_url, arq_queue_name=queue)
    env = support.worker_env(url, redis_url, queue)
    worker_log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False)  # noqa: SIM115
    worker = subprocess.Popen(
        [PYTHON, "-m", "arq", "worker.WorkerSettings"],
        cwd=ROOT,
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    async def run() -> dict[str, Any]:
        redis = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=queue)
        try:
            job_id = job_id_for(*files, job_namespace(settings))
            started = time.perf_counter()
            job_id = (await enqueue_ingestion(redis, job_id, *files, queue_name=queue, force=True)).job_id
            while True:
                state = await get_job_state(redis, job_id, queue)
                if state is not None and state.status in ("complete", "failed"):
                    break
                if worker.poll() is not None:
                    raise RuntimeError(f"the ingestion worker exited; see {worker_log.name}")
                await asyncio.sleep(0.25)
            if state.status != "complete" or state.report is None:
                raise RuntimeError(f"ingestion failed: {state.error}; see {worker_log.name}")
            return {"seconds": state.report.seconds, "wall_seconds": time.perf_counter() - started}
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        worker_log.close()


def load_floor(floor: Path, url: str, files: tuple[Path, Path]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [PYTHON, str(floor), "load", dsn_of(url), str(files[0]), str(files[1])], cwd=floor.parent, check=True
    )
    return time.perf_counter() - started


@contextmanager
def replicated(redis_url: str, files: tuple[Path, Path]) -> Iterator[tuple[str, str]]:
    """A primary of our own (the embedded stack's binaries, app.devstack) with `files` ingested through the
    worker, and a streaming replica made from it with pg_basebackup -R: (primary URL, replica URL)."""
    from app.devstack import Stack

    with tempfile.TemporaryDirectory(prefix="bench-replication-") as work:
        primary, replica = Stack(Path(work) / "primary"), Stack(Path(work) / "replica")
        try:
            port = primary._start_postgres()
            with database(f"postgresql+asyncpg://postgres@{HOST}:{port}/postgres", "replicated") as url:
                ingest(url, redis_url, files)
                vacuum_analyze(url)
                replica_port = replica.start_replica(port)
                yield url, make_url(url).set(port=replica_port).render_as_string(hide_password=False)
        finally:
            replica.stop()
            primary.stop()


def transactions(url: str) -> int:
    """Transactions committed in `url`'s database on that server (a standby counts its own reads)."""
    rows = asyncio.run(
        query(url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    )
    return int(rows[0][0])
