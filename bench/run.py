"""The performance benchmark, in one command: `make bench` (or `python bench/run.py`).

What it does, on this machine, with everything on it (API, PostgreSQL, load generator):

1. Generates workbooks (app/sample_data.py, cached under bench/out/) and ingests them into a new
   database through the real job: a `python -m arq worker.WorkerSettings` subprocess and an enqueued
   ingestion, as production does. Default: 10,000 customers / 100,000 loans.
2. Loads the same workbooks into raw_* tables with the floor's own loader
   (../shared/bench/raw_floor.py, else bench/raw_floor.py) and VACUUM ANALYZEs the database.
3. Starts the API as deployed (`python -m app.cli serve`: uvicorn, uvloop, httptools) with 2 workers and
   drives each endpoint at 64 concurrent connections for a fixed time: check-eligibility and view-loans
   over random customers, view-loan over random loans, create-loan over distinct customers (last: it
   writes). wrk with a Lua script when installed, else bench/loadgen.py.
4. Starts the floor (`uvicorn raw_floor:app --workers 2`) and drives its two endpoints the same way.
5. Repeats eligibility, view-loan and view-loans on a second database of 100,000 customers / 1,000,000
   loans (ten loans a customer, as before: the book grows, not each customer's history) and prints the
   ratio of p50 latencies.
6. Runs the ingestion benchmark (bench/ingest_bench.py's main()).
7. Writes bench/RESULTS.md (and the raw figures to bench/out/results.json).

Sizes and durations come from flags or BENCH_* variables (`--help`); `--quick` (BENCH_QUICK=1) is a smoke
run of about a minute and a half. DATABASE_URL (or TEST_DATABASE_URL) must be allowed to CREATE DATABASE;
the benchmark never touches the database it names. REDIS_URL is the Redis for the job queue.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import make_url  # noqa: E402

from app.config import normalise_database_url  # noqa: E402
from bench import support  # noqa: E402

BENCH = ROOT / "bench"
OUT = BENCH / "out"
# Beside the repository (../shared), in bench/, or the workplace's shared copy for clones made elsewhere.
FLOOR_CANDIDATES = (
    ROOT.parent / "shared" / "bench" / "raw_floor.py",
    BENCH / "raw_floor.py",
    Path("/work/shared/bench/raw_floor.py"),
)
PYTHON = sys.executable
HOST = "127.0.0.1"

# The same request bodies go to the service and to the floor.
ELIGIBILITY = {"loan_amount": 50_000, "interest_rate": 10.5, "tenure": 24}
# Small enough that a customer within limits is approved: create-loan then takes its full path (insert).
NEW_LOAN = {"loan_amount": 10_000, "interest_rate": 14, "tenure": 12}
TARGETS = {
    "fraction_of_floor": 0.60,
    "p99_ms": 100.0,
    "create_loan_rps": 500.0,
    "p50_ratio": 1.3,
    "statement_vs_view_loan_p50": 1.5,
}
# Servicing runs on 30-year loans (360 installments), seeded into the database after create-loan's run:
# make-payment pays their EMI, then view-statement reads them (each with the payments made by then).
LONG_LOANS = 2_000
LONG_LOAN = {"loan_amount": "3000000.00", "interest_rate": "9.50", "tenure": 360}


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- configuration


@dataclass
class Config:
    database_url: str
    redis_url: str
    customers: int = 10_000
    loans: int = 100_000
    big_customers: int = 100_000
    big_loans: int = 1_000_000
    ingest_customers: int = 100_000
    ingest_loans: int = 1_000_000
    duration: float = 10.0
    warmup: float = 2.0
    repeats: int = 3
    connections: int = 64
    workers: int = 2
    generator: str = "auto"
    floor: Path | None = None
    big: bool = True
    ingest: bool = True
    output: Path = BENCH / "RESULTS.md"
    quick: bool = False


def parse_args(argv: list[str] | None = None) -> Config:
    env = os.environ

    def number(name: str, default: float) -> float:
        return float(env.get(f"BENCH_{name}", default))

    quick = env.get("BENCH_QUICK", "") not in ("", "0")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", default=quick, help="smoke run (BENCH_QUICK=1)")
    parser.add_argument("--duration", type=float, help="seconds per endpoint (BENCH_DURATION, 10; quick 3)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per endpoint (BENCH_WARMUP, 2)")
    parser.add_argument(
        "--repeats", type=int, help="measured runs per endpoint, median kept (BENCH_REPEATS, 3)"
    )
    parser.add_argument("--connections", type=int, help="concurrent connections (BENCH_CONNECTIONS, 64)")
    parser.add_argument("--workers", type=int, help="API and floor worker processes (BENCH_WORKERS, 2)")
    parser.add_argument("--customers", type=int, help="customers (BENCH_CUSTOMERS, 10000)")
    parser.add_argument("--loans", type=int, help="loans (BENCH_LOANS, 100000)")
    parser.add_argument("--big-customers", type=int, help="customers of the large run (100000)")
    parser.add_argument("--big-loans", type=int, help="loans of the large run (BENCH_BIG_LOANS, 1000000)")
    parser.add_argument("--ingest-customers", type=int, help="customers for the ingestion benchmark")
    parser.add_argument("--ingest-loans", type=int, help="loans for the ingestion benchmark")
    parser.add_argument("--skip-big", action="store_true", default=env.get("BENCH_SKIP_BIG") == "1")
    parser.add_argument("--skip-ingest", action="store_true", default=env.get("BENCH_SKIP_INGEST") == "1")
    parser.add_argument("--skip-floor", action="store_true", default=env.get("BENCH_SKIP_FLOOR") == "1")
    parser.add_argument("--floor", type=Path, default=env.get("BENCH_FLOOR"), help="path to raw_floor.py")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "builtin"),
        default=env.get("BENCH_GENERATOR", "auto"),
        help="load generator: wrk when installed (auto), or the bundled bench/loadgen.py",
    )
    parser.add_argument("--output", type=Path, default=Path(env.get("BENCH_OUTPUT", BENCH / "RESULTS.md")))
    parser.add_argument(
        "--database-url",
        default=env.get("DATABASE_URL")
        or env.get("TEST_DATABASE_URL")
        or "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument(
        "--redis-url", default=env.get("REDIS_URL") or env.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    )
    args = parser.parse_args(argv)

    small = (2_000, 20_000) if args.quick else (10_000, 100_000)
    big = (20_000, 200_000) if args.quick else (100_000, 1_000_000)
    config = Config(
        database_url=normalise_database_url(args.database_url),
        redis_url=args.redis_url,
        customers=args.customers or int(number("CUSTOMERS", small[0])),
        loans=args.loans or int(number("LOANS", small[1])),
        big_customers=args.big_customers or int(number("BIG_CUSTOMERS", big[0])),
        big_loans=args.big_loans or int(number("BIG_LOANS", big[1])),
        ingest_customers=args.ingest_customers or int(number("INGEST_CUSTOMERS", big[0])),
        ingest_loans=args.ingest_loans or int(number("INGEST_LOANS", big[1])),
        duration=args.duration or number("DURATION", 3 if args.quick else 10),
        warmup=args.warmup if args.warmup is not None else number("WARMUP", 1 if args.quick else 2),
        repeats=args.repeats or int(number("REPEATS", 1 if args.quick else 3)),
        connections=args.connections or int(number("CONNECTIONS", 64)),
        workers=args.workers or int(number("WORKERS", 2)),
        generator=args.generator,
        big=not args.skip_big,
        ingest=not args.skip_ingest,
        output=args.output,
        quick=args.quick,
    )
    if not args.skip_floor:
        candidates = (args.floor,) if args.floor else FLOOR_CANDIDATES
        config.floor = next((Path(c).resolve() for c in candidates if c and Path(c).is_file()), None)
        if config.floor is None:
            log("no raw_floor.py found: the floor comparison is skipped")
    if config.generator == "auto":
        config.generator = "wrk" if shutil.which("wrk") else "builtin"
    elif config.generator == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--generator wrk: wrk is not installed")
    return config


# --------------------------------------------------------------------------------------------- machine


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
    whatever else the server is doing too."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() not in ("postgres", "postmaster"):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
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


async def _query(url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
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


def start_api(url: str, redis_url: str, workers: int) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "WEB_CONCURRENCY": str(workers),
        "API_KEYS": "",
        # The floor writes no access log; neither do we here (a JSON line per request is a separate cost,
        # reported in bench/RESULTS.md's notes, and routed to a log shipper in production).
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
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


# ------------------------------------------------------------------------------------------------ load


@dataclass
class Scenario:
    name: str
    requests: list[tuple[str, str, dict[str, Any] | None]]
    distinct: bool = False  # each request at most once (create-loan: one loan per customer)


@dataclass
class Result:
    name: str
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int
    statuses: dict[str, int] = field(default_factory=dict)
    server_cpu_us: float = float("nan")
    postgres_cpu_us: float = float("nan")
    generator_cpu_us: float = float("nan")
    idle_before: float = float("nan")
    distinct_exhausted: bool = False
    runs: list[dict[str, float]] = field(default_factory=list)


_LUA = r"""
local items = %(items)s
local nthreads = %(threads)d
local count_statuses = %(count)s
local threads = {}
local requests = {}
local index = 0
statuses = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  for k, item in ipairs(items) do
    local headers = nil
    if item[3] then headers = {["Content-Type"] = "application/json"} end
    requests[k] = wrk.format(item[1], item[2], headers, item[3])
  end
  index = tid
end

function request()
  local r = requests[(index %% #requests) + 1]
  index = index + nthreads
  return r
end

if count_statuses then
  function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local counted = thread:get("statuses") or {}
    for status, n in pairs(counted) do merged[tostring(status)] = (merged[tostring(status)] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(merged) do table.insert(parts, string.format('"%%s": %%d', status, n)) end
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, ' ..
    '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d, "statuses": {%%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, table.concat(parts, ", ")))
end
"""


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run_wrk(server: Server, scenario: Scenario, config: Config, seconds: float) -> dict[str, Any]:
    threads = min(2, config.connections)
    items = ",\n".join(
        "{{{}, {}, {}}}".format(
            _lua_string(method),
            _lua_string(path),
            _lua_string(json.dumps(body, separators=(",", ":"))) if body is not None else "nil",
        )
        for method, path, body in scenario.requests
    )
    script = _LUA % {
        "items": "{\n" + items + "\n}",
        "threads": threads,
        "count": "true" if scenario.distinct else "false",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        command = [
            "wrk", f"-t{threads}", f"-c{config.connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", handle.name, f"http://{HOST}:{server.port}",
        ]  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(handle.name)
    line = next(line for line in output.splitlines() if line.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds_run = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / seconds_run,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "non_2xx": raw["status"],
        "errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        "statuses": raw["statuses"],
    }


def _run_builtin(server: Server, scenario: Scenario, config: Config, seconds: float) -> dict[str, Any]:
    spec = {
        "host": HOST,
        "port": server.port,
        "connections": config.connections,
        "duration": seconds,
        "warmup": 0,
        "requests": scenario.requests,
        "distinct": scenario.distinct,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    try:
        output = subprocess.run(
            [PYTHON, str(BENCH / "loadgen.py"), handle.name], check=True, capture_output=True, text=True
        ).stdout
    finally:
        os.unlink(handle.name)
    raw = json.loads(output.strip().splitlines()[-1])
    non_2xx = sum(n for status, n in raw["statuses"].items() if not status.startswith("2"))
    return {
        "requests": raw["requests"],
        "rps": raw["rps"],
        "p50_ms": raw["p50_ms"],
        "p99_ms": raw["p99_ms"],
        "non_2xx": non_2xx,
        "errors": raw["errors"],
        "statuses": raw["statuses"],
    }


def _measure(server: Server, scenario: Scenario, config: Config, target: str) -> Result:
    run = _run_wrk if config.generator == "wrk" else _run_builtin
    idle = wait_for_quiet()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before, postgres_before = server.cpu_s(), postgres_cpu_s()
    raw = run(server, scenario, config, config.duration)
    server_cpu, postgres_cpu = server.cpu_s() - server_before, postgres_cpu_s() - postgres_before
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    generator_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    count = max(raw["requests"], 1)
    return Result(
        name=scenario.name,
        target=target,
        rps=raw["rps"],
        p50_ms=raw["p50_ms"],
        p99_ms=raw["p99_ms"],
        requests=raw["requests"],
        non_2xx=raw["non_2xx"],
        errors=raw["errors"],
        statuses=raw["statuses"],
        server_cpu_us=server_cpu / count * 1e6,
        postgres_cpu_us=postgres_cpu / count * 1e6,
        generator_cpu_us=generator_cpu / count * 1e6,
        idle_before=idle,
        distinct_exhausted=scenario.distinct and raw["requests"] > len(scenario.requests),
    )


def drive(server: Server, scenario: Scenario, config: Config, target: str) -> Result:
    """Warm up, then measure `config.repeats` times and keep each figure's median.

    Why repeat: uvicorn's workers share one listening socket and race to accept, so a run's 64
    connections split unevenly between the two workers (22/42 as often as 32/32), and the requests on
    the busier worker queue longer. Throughput hardly moves; p50 lands on either side of that split.
    The median of a few runs is stable where one run is not.
    """
    run = _run_wrk if config.generator == "wrk" else _run_builtin
    if config.warmup > 0 and not scenario.distinct:
        run(server, scenario, config, config.warmup)
    repeats = 1 if scenario.distinct else max(1, config.repeats)  # create-loan: each customer once
    runs = [_measure(server, scenario, config, target) for _ in range(repeats)]

    def median(key: str) -> float:
        return float(statistics.median(getattr(r, key) for r in runs))

    result = Result(
        name=scenario.name,
        target=target,
        rps=median("rps"),
        p50_ms=median("p50_ms"),
        p99_ms=median("p99_ms"),
        requests=sum(r.requests for r in runs),
        non_2xx=sum(r.non_2xx for r in runs),
        errors=sum(r.errors for r in runs),
        statuses=dict(sum((Counter(r.statuses) for r in runs), Counter())),
        server_cpu_us=median("server_cpu_us"),
        postgres_cpu_us=median("postgres_cpu_us"),
        generator_cpu_us=median("generator_cpu_us"),
        idle_before=min(r.idle_before for r in runs),
        distinct_exhausted=any(r.distinct_exhausted for r in runs),
        runs=[{k: round(getattr(r, k), 2) for k in ("rps", "p50_ms", "p99_ms")} for r in runs],
    )
    log(
        f"{target:>5} {scenario.name:<17} {result.rps:8.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms  non-2xx {result.non_2xx}  errors {result.errors}  "
        f"cpu/req: server {result.server_cpu_us:.0f} us, postgres {result.postgres_cpu_us:.0f} us"
        + (f"  (median of {repeats})" if repeats > 1 else "")
    )
    return result


# ------------------------------------------------------------------------------------------- scenarios


@dataclass
class Ids:
    customers: list[int]
    loans: list[int]
    lendable: list[int]  # customers a small new loan is within limits for, shuffled
    raw_loans: list[int] = field(default_factory=list)


def sample_ids(url: str, with_raw: bool, size: int = 20_000) -> Ids:
    today = dt.datetime.now(dt.UTC).date()
    customers = [r[0] for r in asyncio.run(_query(url, "SELECT customer_id FROM customers"))]
    loans = [
        r[0] for r in asyncio.run(_query(url, "SELECT loan_id FROM loans ORDER BY random() LIMIT $1", size))
    ]
    # Within the approved limit and the EMI cap with room for the new loan (the score then decides the
    # rate, not the outcome): these customers' create-loan requests end in an INSERT.
    lendable_sql = """
        SELECT c.customer_id FROM customers c LEFT JOIN loans l
          ON l.customer_id = c.customer_id AND l.end_date >= $1
        GROUP BY c.customer_id
        HAVING coalesce(sum(l.loan_amount), 0) + $2 <= min(c.approved_limit)
           AND coalesce(sum(l.monthly_installment), 0) + $3 <= min(c.monthly_salary) / 2"""
    emi_bound = NEW_LOAN["loan_amount"]  # an upper bound for any 12-month installment of this loan
    lendable = [
        r[0] for r in asyncio.run(_query(url, lendable_sql, today, NEW_LOAN["loan_amount"], emi_bound))
    ]
    rng = random.Random(0)
    rng.shuffle(lendable)
    raw_loans: list[int] = []
    if with_raw:
        raw_loans = [
            r[0]
            for r in asyncio.run(_query(url, "SELECT id FROM raw_loans ORDER BY random() LIMIT $1", size))
        ]
    return Ids(customers=customers, loans=loans, lendable=lendable, raw_loans=raw_loans)


def eligibility(ids: Ids, size: int = 20_000) -> Scenario:
    rng = random.Random(1)
    return Scenario(
        "check-eligibility",
        [
            ("POST", "/api/check-eligibility", {"customer_id": rng.choice(ids.customers), **ELIGIBILITY})
            for _ in range(size)
        ],
    )


def view_loan(loan_ids: list[int]) -> Scenario:
    return Scenario("view-loan", [("GET", f"/api/view-loan/{loan_id}", None) for loan_id in loan_ids])


def view_loans(ids: Ids, size: int = 20_000) -> Scenario:
    rng = random.Random(2)
    return Scenario(
        "view-loans", [("GET", f"/api/view-loans/{rng.choice(ids.customers)}", None) for _ in range(size)]
    )


def seed_long_loans(url: str, ids: Ids, count: int = LONG_LOANS) -> list[tuple[int, int, str]]:
    """`count` 360-installment loans, one per customer, started yesterday; (customer, loan, EMI) each."""
    from decimal import Decimal

    from app.credit.dates import add_months
    from app.credit.policy import installment
    from app.credit.schedule import installments_left

    amount, rate, tenure = Decimal(LONG_LOAN["loan_amount"]), Decimal(LONG_LOAN["interest_rate"]), 360
    emi = installment(amount, rate, tenure)
    left = installments_left(amount, rate, emi, first=1, tenure=tenure)
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    customers = random.Random(3).sample(ids.customers, min(count, len(ids.customers)))
    rows = asyncio.run(
        _query(
            url,
            """
            INSERT INTO loans (customer_id, loan_amount, tenure, interest_rate, monthly_installment,
                               start_date, end_date, outstanding_principal, repayments_left)
            SELECT c, $2, $3, $4, $5, $6, $7, $2, $8 FROM unnest($1::bigint[]) AS c
            RETURNING customer_id, loan_id
            """,
            customers,
            amount,
            tenure,
            rate,
            emi,
            start,
            add_months(start, tenure),
            left,
        )
    )
    return [(r["customer_id"], r["loan_id"], str(emi)) for r in rows]


def get_customer(ids: Ids, size: int = 20_000) -> Scenario:
    rng = random.Random(4)
    return Scenario(
        "get-customer", [("GET", f"/api/customers/{rng.choice(ids.customers)}", None) for _ in range(size)]
    )


def make_payment(long_loans: list[tuple[int, int, str]]) -> Scenario:
    return Scenario(
        "make-payment",
        [("POST", f"/api/make-payment/{c}/{loan}", {"amount": emi}) for c, loan, emi in long_loans],
    )


def view_statement(long_loans: list[tuple[int, int, str]]) -> Scenario:
    return Scenario(
        "view-statement", [("GET", f"/api/view-statement/{c}/{loan}", None) for c, loan, _ in long_loans]
    )


def create_loan(ids: Ids) -> Scenario:
    return Scenario(
        "create-loan",
        [("POST", "/api/create-loan", {"customer_id": c, **NEW_LOAN}) for c in ids.lendable],
        distinct=True,
    )


# ----------------------------------------------------------------------------------------------- report


def _fmt(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"  # NaN check


def write_report(config: Config, report: dict[str, Any]) -> str:
    machine = report["machine"]
    ours = {r["name"]: r for r in report["service"]}
    floor = {r["name"]: r for r in report.get("floor", [])}
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`python bench/run.py{' --quick' if config.quick else ''}`) on "
        f"{machine['date']}. Everything ran on this one machine: the API, PostgreSQL and the load generator.",
        "",
        "## Machine",
        "",
        "| CPU | Cores | RAM | PostgreSQL | Python | OS | Load generator |",
        "|---|---|---|---|---|---|---|",
        f"| {machine['cpu']} | {machine['cores']} | {machine['ram']} | {machine['postgresql']} | "
        f"{machine['python']} | {machine['os']} | {report['generator']} |",
        "",
        f"## Endpoints: {config.customers:,} customers / {config.loans:,} loans",
        "",
        f"{config.connections} concurrent connections; per endpoint {config.warmup:g} s of warm-up, then "
        f"the median of {config.repeats} runs of {config.duration:g} s (create-loan: one run, each customer "
        f"once); {config.workers} API workers (`python -m app.cli serve`: uvicorn, uvloop, httptools) and "
        f"{config.workers} floor workers. The floor is `raw_floor.py`: a bare ASGI app, one asyncpg query "
        "per request, the same policy, the same data.",
        "",
        "| Endpoint | Requests/s | p50 ms | p99 ms | Floor requests/s | Floor p50 ms | Floor p99 ms "
        "| Share of floor | Non-2xx / errors | API CPU µs/req | PostgreSQL CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in ours.items():
        base = floor.get(name)
        share = result["rps"] / base["rps"] if base else float("nan")
        lines.append(
            f"| {name} | {_fmt(result['rps'])} | {_fmt(result['p50_ms'], 1)} | {_fmt(result['p99_ms'], 1)} | "
            f"{_fmt(base['rps']) if base else '—'} | {_fmt(base['p50_ms'], 1) if base else '—'} | "
            f"{_fmt(base['p99_ms'], 1) if base else '—'} | {_fmt(share * 100) + ' %' if base else '—'} | "
            f"{result['non_2xx']} / {result['errors']} | {_fmt(result['server_cpu_us'])} | "
            f"{_fmt(result['postgres_cpu_us'])} |"
        )
    created = ours.get("create-loan")
    if created:
        statuses = created.get("statuses", {})
        lines += [
            "",
            f"create-loan: {statuses.get('201', 0):,} loans created (201) and {statuses.get('200', 0):,} "
            f"rejections (200) over {report.get('lendable_customers', 0):,} distinct customers within limits"
            + (" (the list ran out and wrapped around)" if created.get("distinct_exhausted") else "")
            + ".",
        ]
    if "big" in report:
        big = {r["name"]: r for r in report["big"]}
        lines += [
            "",
            f"## Flat latency as the loan book grows: {config.big_customers:,} customers / "
            f"{config.big_loans:,} loans",
            "",
            "Ten loans a customer in both runs: the book grows tenfold, each customer's history does not.",
            "",
            f"| Endpoint | p50 ms @ {config.loans:,} | p50 ms @ {config.big_loans:,} | p50 ratio | "
            f"Requests/s @ {config.loans:,} | Requests/s @ {config.big_loans:,} |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, result in big.items():
            small = ours.get(name)
            if small:
                ratio = result["p50_ms"] / small["p50_ms"]
                lines.append(
                    f"| {name} | {_fmt(small['p50_ms'], 2)} | {_fmt(result['p50_ms'], 2)} | "
                    f"{_fmt(ratio, 2)} | {_fmt(small['rps'])} | {_fmt(result['rps'])} |"
                )
    ingestion = report.get("ingestion")
    if ingestion:
        lines += [
            "",
            f"## Ingestion: {ingestion['customers']:,} customers / {ingestion['loans']:,} loans "
            "(bench/ingest_bench.py)",
            "",
            "| Ingestion s | openpyxl alone s | Ratio | Worker peak RSS MB | Reader peak RSS MB | Re-run s |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {ingestion['ingest_seconds']} | {ingestion['openpyxl_seconds']} | {ingestion['ratio']} | "
            f"{ingestion['worker_peak_rss_mb']} | {ingestion['reader_peak_rss_mb']} | "
            f"{ingestion['second_run_seconds']} |",
        ]
    setup = report.get("setup", {})
    nan = float("nan")
    generator_cpu = statistics.median([r["generator_cpu_us"] for r in report["service"]] or [nan])
    lines += [
        "",
        "## How to read this",
        "",
        "- Requests/s and latencies come from the load generator (wrk's HdrHistogram percentiles, or the "
        "bundled generator's exact ones); a closed loop: each connection sends its next request when the "
        "previous answer is complete.",
        "- CPU µs/req is the CPU time of the server's processes (API or floor), and of every PostgreSQL "
        "process, over the measured run divided by the requests served. Unlike requests/s it hardly moves "
        "when something else runs on the machine. The load generator used "
        f"{_fmt(generator_cpu, 0)} µs of CPU per request (median over the API runs, its start-up "
        "included): that share of the two cores was not the server's.",
        f"- The API runs with LOG_LEVEL={os.environ.get('BENCH_LOG_LEVEL', 'WARNING')}: no JSON access-log "
        "line per request (the floor writes none); metrics, request ids, API-key and body-limit middlewares "
        "are all on.",
        "- Data: workbooks from app/sample_data.py, ingested through the ARQ job "
        f"({_fmt(setup.get('ingest_seconds', nan), 1)} s for the endpoint run's workbooks); the floor "
        f"loads the same files into raw_* tables ({_fmt(setup.get('floor_load_seconds', nan), 1)} s). "
        "Both sets of tables are VACUUM ANALYZEd before measuring, the steady state autovacuum reaches.",
        f"- Targets: eligibility and view-loan >= {TARGETS['fraction_of_floor']:.0%} of the floor's "
        f"requests/s with p99 < {TARGETS['p99_ms']:.0f} ms; create-loan >= "
        f"{TARGETS['create_loan_rps']:.0f}/s; p50 ratio at the large book <= {TARGETS['p50_ratio']}; "
        f"view-statement of a 360-installment loan within {TARGETS['statement_vs_view_loan_p50']}x "
        "view-loan's p50.",
        f"- make-payment pays the EMI of {LONG_LOANS:,} seeded 360-installment loans (3,000,000 at 9.5%), "
        "round-robin, warm-up included; view-statement then reads the same loans with those payments.",
        "- What was profiled and changed to get here: [PROFILING.md](PROFILING.md).",
        "- Raw figures: bench/out/results.json. Re-run: `make bench`; smoke run: `BENCH_QUICK=1 make bench`.",
        "",
    ]
    text = "\n".join(lines)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    if config.output.exists():  # runs no script can make (the Docker stack) are kept below the figures
        previous = config.output.read_text()
        if RECORDED_BY_HAND in previous:
            text += "\n" + previous[previous.index(RECORDED_BY_HAND) :]
    config.output.write_text(text)
    return text


RECORDED_BY_HAND = "## Recorded by hand"


def verdicts(report: dict[str, Any]) -> list[str]:
    ours = {r["name"]: r for r in report["service"]}
    floor = {r["name"]: r for r in report.get("floor", [])}
    out = []
    for name in ("check-eligibility", "view-loan"):
        if name in ours and name in floor:
            share = ours[name]["rps"] / floor[name]["rps"]
            out.append(
                f"{name}: {share:.0%} of the floor (target {TARGETS['fraction_of_floor']:.0%}), "
                f"p99 {ours[name]['p99_ms']:.1f} ms (target < {TARGETS['p99_ms']:.0f})"
            )
    if "create-loan" in ours:
        out.append(
            f"create-loan: {ours['create-loan']['rps']:.0f}/s (target >= {TARGETS['create_loan_rps']:.0f})"
        )
    if "view-statement" in ours and "view-loan" in ours:
        ratio = ours["view-statement"]["p50_ms"] / ours["view-loan"]["p50_ms"]
        out.append(
            f"view-statement (360 installments): p50 {ratio:.2f}x view-loan's "
            f"(target <= {TARGETS['statement_vs_view_loan_p50']})"
        )
    for result in report.get("big", []):
        small = ours.get(result["name"])
        if small:
            out.append(
                f"{result['name']}: p50 ratio {result['p50_ms'] / small['p50_ms']:.2f} at the large book "
                f"(target <= {TARGETS['p50_ratio']})"
            )
    return out


# ------------------------------------------------------------------------------------------------ main


def run_ingest_bench(config: Config) -> dict[str, Any] | None:
    path = BENCH / "ingest_bench.py"
    if not path.exists():
        log("bench/ingest_bench.py not found: the ingestion benchmark is skipped")
        return None
    spec = importlib.util.spec_from_file_location("ingest_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result: dict[str, Any] = module.main(
        config.database_url, config.redis_url, customers=config.ingest_customers, loans=config.ingest_loans
    )
    return result


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    started = time.monotonic()
    log(
        f"generator {config.generator}; {config.connections} connections; {config.duration:g} s per "
        f"endpoint; {config.customers:,}/{config.loans:,} then {config.big_customers:,}/{config.big_loans:,}"
        + (" (quick)" if config.quick else "")
    )
    report: dict[str, Any] = {
        "machine": describe_machine(dsn_of(config.database_url)),
        "generator": "wrk (Lua script)" if config.generator == "wrk" else "bench/loadgen.py (bundled)",
        "config": {k: str(v) for k, v in asdict(config).items() if k not in ("database_url", "redis_url")},
    }

    small_files = workbooks(config.customers, config.loans)
    with database(config.database_url, "small") as url:
        log("ingesting through the ARQ worker ...")
        report["setup"] = {"ingest_seconds": ingest(url, config.redis_url, small_files)["seconds"]}
        if config.floor:
            log(f"loading the floor's tables with {config.floor} ...")
            report["setup"]["floor_load_seconds"] = load_floor(config.floor, url, small_files)
        vacuum_analyze(url)
        ids = sample_ids(url, with_raw=config.floor is not None)
        report["lendable_customers"] = len(ids.lendable)
        with start_api(url, config.redis_url, config.workers) as api:
            report["service"] = [
                asdict(drive(api, scenario, config, "api"))
                for scenario in (
                    eligibility(ids),
                    view_loan(ids.loans),
                    view_loans(ids),
                    get_customer(ids),
                    create_loan(ids),
                )
            ]
            long_loans = seed_long_loans(url, ids)
            report["service"] += [
                asdict(drive(api, scenario, config, "api"))
                for scenario in (make_payment(long_loans), view_statement(long_loans))
            ]
        if config.floor:
            with start_floor(config.floor, url, config.workers) as floor:
                report["floor"] = [
                    asdict(drive(floor, scenario, config, "floor"))
                    for scenario in (eligibility(ids), view_loan(ids.raw_loans))
                ]

    if config.big:
        big_files = workbooks(config.big_customers, config.big_loans)
        with database(config.database_url, "big") as url:
            log(f"ingesting {config.big_loans:,} loans through the ARQ worker ...")
            report["setup"]["big_ingest_seconds"] = ingest(url, config.redis_url, big_files)["seconds"]
            vacuum_analyze(url)
            ids = sample_ids(url, with_raw=False)
            with start_api(url, config.redis_url, config.workers) as api:
                report["big"] = [
                    asdict(drive(api, scenario, config, "big"))
                    for scenario in (eligibility(ids), view_loan(ids.loans), view_loans(ids))
                ]

    if config.ingest:
        log("ingestion benchmark (bench/ingest_bench.py) ...")
        report["ingestion"] = run_ingest_bench(config)

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(report, indent=2, default=str))
    print(write_report(config, report))
    for line in verdicts(report):
        print(line)
    log(f"done in {time.monotonic() - started:.0f} s; wrote {config.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
