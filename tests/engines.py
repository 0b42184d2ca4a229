"""Real engines of our own for the scaling tests: a PostgreSQL primary with a streaming replica, and
PgBouncer in transaction pooling mode. Each starts on spare ports and stops with its fixture.

The PostgreSQL binaries are the embedded dev stack's (pgserver's, as app.devstack runs them). PgBouncer is
Debian's package: on PATH if installed, else downloaded once with `apt-get download` and unpacked (no root
install) under .data/tools. Where either cannot run, the tests that need it are skipped and say why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import make_url

from app.devstack import Stack, free_port, port_open

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".data" / "tools"
PGBOUNCER_PACKAGES = ("pgbouncer", "libc-ares2", "libevent-2.1-7")


def _require_pgserver() -> None:
    pytest.importorskip("pgserver", reason="the embedded stack's PostgreSQL (pgserver) is missing")


def _system_user() -> str | None:
    """PostgreSQL and PgBouncer refuse to run as root: as root, both run as pgserver's unprivileged user."""
    if os.geteuid() != 0:
        return None
    from pgserver.utils import ensure_user_exists

    entry = ensure_user_exists("pgserver")
    assert entry is not None
    return entry.pw_name


def _own(path: Path, user: str | None) -> None:
    """Make `path` the unprivileged user's, and every folder above it traversable by that user."""
    if user is not None:
        from pgserver.utils import ensure_prefix_permissions

        ensure_prefix_permissions(path)
        shutil.chown(path, user, user)


@dataclass
class Server:
    stack: Stack
    port: int

    def url(self, database: str = "credit") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        assert self.stack._start_postgres(self.port) == self.port

    def stop(self) -> None:
        self.stack.stop()


def start_primary(data_dir: Path) -> Server:
    _require_pgserver()
    server = Server(Stack(data_dir), free_port())
    server.start()
    return server


def start_replica(primary: Server, data_dir: Path) -> Server:
    """A hot standby of `primary` (app.devstack's pg_basebackup -R), started on a port of its own."""
    _require_pgserver()
    server = Server(Stack(data_dir), free_port())
    assert server.stack.start_replica(primary.port, server.port) == server.port
    return server


def _pgbouncer_binary() -> tuple[Path, dict[str, str]]:
    """PgBouncer's binary and the environment it needs; skips the test when it cannot be had."""
    found = shutil.which("pgbouncer")
    if found:
        return Path(found), {}
    root = TOOLS / "pgbouncer"
    binary = root / "usr" / "sbin" / "pgbouncer"
    env = {"LD_LIBRARY_PATH": str(root / "usr" / "lib" / "x86_64-linux-gnu")}
    if not binary.exists():
        if not (shutil.which("apt-get") and shutil.which("dpkg")):
            pytest.skip("PgBouncer is not installed and this machine has no apt-get/dpkg to fetch Debian's")
        downloads = TOOLS / "debs"
        downloads.mkdir(parents=True, exist_ok=True)
        fetched = subprocess.run(
            ["apt-get", "download", *PGBOUNCER_PACKAGES],
            cwd=downloads,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if fetched.returncode:
            pytest.skip(f"PgBouncer: `apt-get download` failed: {fetched.stderr.strip()[-300:]}")
        for deb in sorted(downloads.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=60)
    version = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True)
    if version.returncode:
        pytest.skip(f"PgBouncer does not run here: {version.stderr.strip()[-300:]}")
    return binary, env


@dataclass
class PgBouncer:
    process: subprocess.Popen[bytes]
    port: int
    logfile: Path

    def url(self, database_url: str) -> str:
        """`database_url` (a database behind this PgBouncer's server) as reached through PgBouncer."""
        through = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return through.render_as_string(hide_password=False)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # "safe shutdown" is SIGINT's: wait for clients, exit
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_pgbouncer(server_url: str, work_dir: Path, pool_size: int = 60) -> PgBouncer:
    """PgBouncer in transaction pooling mode before `server_url`'s server, for every database on it."""
    binary, env = _pgbouncer_binary()
    user = _system_user()
    server = make_url(server_url)
    work_dir.mkdir(parents=True, exist_ok=True)
    _own(work_dir, user)
    port = free_port()
    users = work_dir / "users.txt"
    users.write_text(f'"{server.username or "postgres"}" "{server.password or ""}"\n')
    logfile = work_dir / "pgbouncer.log"
    config = work_dir / "pgbouncer.ini"
    config.write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {users}",
                "pool_mode = transaction",
                f"default_pool_size = {pool_size}",
                "max_client_conn = 1000",
                "server_idle_timeout = 10",
                f"logfile = {logfile}",
                "",
            ]
        )
    )
    for path in (users, config):
        _own(path, user)
    if user is not None:
        from pgserver.utils import ensure_prefix_permissions

        ensure_prefix_permissions(binary)
    process = subprocess.Popen([str(binary), str(config)], env={**os.environ, **env}, user=user)
    deadline = time.monotonic() + 20
    while not port_open(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise RuntimeError(f"PgBouncer did not start:\n{log}")
        time.sleep(0.1)
    return PgBouncer(process, port, logfile)
