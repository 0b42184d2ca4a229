"""`credit-approval` (or `python -m app.cli`): ingest workbooks, follow jobs, make sample data, and run
the service's processes.

Exit status: 0 success; 1 the job failed, or no such job, or a service could not be reached; 2 bad usage
or an unusable file (the reason goes to stderr).
"""

from __future__ import annotations

import asyncio
import os
import sys
import zipfile
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from app.cli_output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, fail, out, print_state, show_progress
from app.config import Settings, get_settings
from app.ingestion.job_state import JobState, get_job_state, job_id_for, job_namespace

POLL_INTERVAL_S = 0.5
ROOT = Path(__file__).resolve().parent.parent

app = typer.Typer(
    name="credit-approval",
    help="Credit approval service: ingest lender workbooks, follow ingestion jobs, run the processes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# --------------------------------------------------------------------------------------------------
# ingest / job


def check_workbook(path: Path, what: str) -> Path:
    """A cheap check that `path` is a readable .xlsx file; the job itself validates the sheet's columns.

    (Opening it with openpyxl would scan a whole sheet when the file records no dimension.)
    """
    if not path.exists():
        raise fail(f"{what} file {path} does not exist", EXIT_USAGE)
    if not path.is_file():
        raise fail(f"{what} file {path} is not a file", EXIT_USAGE)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise fail(f"{what} file {path} is not a readable .xlsx workbook ({exc})", EXIT_USAGE) from None
    if "xl/workbook.xml" not in names or not any(n.startswith("xl/worksheets/") for n in names):
        raise fail(f"{what} file {path} is not an .xlsx workbook (no worksheet inside)", EXIT_USAGE)
    return path.resolve()  # the worker may run elsewhere in the tree: give it an absolute path


async def _redis(settings: Settings) -> Any:
    from arq import create_pool
    from arq.connections import RedisSettings
    from redis.exceptions import RedisError

    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    redis_settings.conn_retries = 0  # fail fast: a CLI should not sit through ARQ's retries
    try:
        return await create_pool(redis_settings, default_queue_name=settings.arq_queue_name)
    except (OSError, RedisError) as exc:
        raise fail(f"cannot reach Redis at {settings.redis_url}: {exc}", EXIT_FAILED) from None


@app.command()
def ingest(
    customers: Annotated[Path, typer.Option(help="Customers workbook (.xlsx).", show_default=True)] = Path(
        "data/customer_data.xlsx"
    ),
    loans: Annotated[Path, typer.Option(help="Loans workbook (.xlsx).", show_default=True)] = Path(
        "data/loan_data.xlsx"
    ),
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job's progress, then print its report.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Start a new run whatever an earlier one of these files did (finished, queued, running or "
            "stuck), and say what was done.",
        ),
    ] = False,
) -> None:
    """Enqueue one job that loads CUSTOMERS, then LOANS, and print its id.

    The id is derived from both files' contents: enqueueing the same files again while the job is queued,
    running or remembered (a day) does not load them twice. The worker (`credit-approval worker`) must be
    able to read the same paths.
    """
    customers_path = check_workbook(customers, "customers")
    loans_path = check_workbook(loans, "loans")
    settings = get_settings()
    job_id = job_id_for(customers_path, loans_path, job_namespace(settings))
    raise typer.Exit(
        asyncio.run(_ingest(settings, job_id, customers_path, loans_path, wait=wait, force=force))
    )


async def _ingest(
    settings: Settings, job_id: str, customers: Path, loans: Path, *, wait: bool, force: bool
) -> int:
    from app.ingestion.job_state import enqueue_ingestion

    redis = await _redis(settings)
    try:
        enqueued = await enqueue_ingestion(
            redis, job_id, customers, loans, queue_name=settings.arq_queue_name, force=force
        )
        job_id = enqueued.job_id
        out.print(job_id, highlight=False)
        if enqueued.note:
            err.print(enqueued.note, highlight=False)
        if not enqueued.created:
            err.print(f"job {job_id} already exists for these files (use --force to load them again)")
        if not wait:
            return EXIT_OK
        state = await _follow(redis, settings, job_id)
    finally:
        await redis.aclose()
    return print_state(state)


async def _follow(redis: Any, settings: Settings, job_id: str) -> JobState | None:
    """Show a live progress bar per file until the job finishes; return its final state."""
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.completed:>12,.0f} rows"),
        TextColumn("{task.fields[rate]:>10,.0f} rows/s"),
        TextColumn("{task.fields[stage]:<8}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        tasks: dict[str, TaskID] = {
            kind: progress.add_task(kind, total=None, rate=0.0, stage="queued")
            for kind in ("customers", "loans")
        }
        while True:
            state = await get_job_state(redis, job_id, settings.arq_queue_name)
            if state is None or state.status in ("complete", "failed"):
                show_progress(progress, tasks, state, final=True)
                return state
            show_progress(progress, tasks, state, final=False)
            await asyncio.sleep(POLL_INTERVAL_S)


@app.command()
def job(
    job_id: Annotated[str, typer.Argument(help="The id `ingest` printed.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full state as JSON.")] = False,
) -> None:
    """Print an ingestion job's status, progress and report. Exit 1 when it failed or is unknown."""
    raise typer.Exit(asyncio.run(_job(get_settings(), job_id, as_json=as_json)))


async def _job(settings: Settings, job_id: str, *, as_json: bool) -> int:
    redis = await _redis(settings)
    try:
        state = await get_job_state(redis, job_id, settings.arq_queue_name)
    finally:
        await redis.aclose()
    if as_json:
        if state is None:
            raise fail(f"no job {job_id} (or its report has expired)", EXIT_FAILED)
        sys.stdout.write(state.model_dump_json(indent=2) + "\n")
        return EXIT_FAILED if state.status == "failed" else EXIT_OK
    return print_state(state)


# --------------------------------------------------------------------------------------------------
# sample-data


@app.command("sample-data")
def sample_data(
    directory: Annotated[Path, typer.Argument(help="Where to write customer_data.xlsx and loan_data.xlsx.")],
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 300,
    loans: Annotated[int, typer.Option(min=0, help="Number of loans.")] = 782,
    seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 0,
    repeat_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of loans reusing another customer's Loan ID.")
    ] = 29 / 782,
) -> None:
    """Write two deterministic workbooks with the real export's headers and realistic values."""
    from app.sample_data import CUSTOMERS_FILE, LOANS_FILE, generate

    columns = (TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.completed:>12,.0f} rows"))
    with Progress(*columns, TimeElapsedColumn(), console=err, disable=customers + loans < 50_000) as progress:
        tasks = {
            CUSTOMERS_FILE: progress.add_task(CUSTOMERS_FILE, total=customers),
            LOANS_FILE: progress.add_task(LOANS_FILE, total=loans),
        }
        files = generate(
            directory,
            customers=customers,
            loans=loans,
            seed=seed,
            repeat_share=repeat_share,
            progress=lambda name, rows: progress.update(tasks[name], completed=rows),
        )
    out.print(f"wrote {files.customers} ({customers:,} customers) and {files.loans} ({loans:,} loans)")


# --------------------------------------------------------------------------------------------------
# Process wrappers


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 in a container.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: WEB_CONCURRENCY).")
    ] = None,
) -> None:
    """Serve the API with uvicorn (uvloop, httptools), its own lines in LOG_FORMAT from the first."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from app.http_protocol import BoundedHttpToolsProtocol
    from app.observability.logging import uvicorn_log_config
    from app.reuse_port import supervisor_socket

    settings = get_settings()
    _empty_metrics_directory()
    config = uvicorn.Config(
        "app.main:app",
        host=host,
        port=port,
        workers=workers or settings.web_concurrency,
        loop="uvloop",
        http=BoundedHttpToolsProtocol,  # httptools, with request heads bounded (16 KiB, 100 fields)
        access_log=False,  # the app logs requests itself
        log_config=uvicorn_log_config(settings.log_level, settings.log_format),
    )
    # What uvicorn.run does, but with several workers each listens on a socket of its own
    # (app.reuse_port): the kernel spreads connections evenly instead of the first worker awake taking all.
    if config.workers > 1:
        with suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[supervisor_socket(config)]).run()
        return
    server = uvicorn.Server(config)
    with suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def _empty_metrics_directory() -> None:
    """Multiprocess metrics are summed over every file in PROMETHEUS_MULTIPROC_DIR: files of the processes of
    an earlier start would count again (counters surviving a restart). Emptied before any worker starts,
    whatever starts `serve` (the image, compose, systemd)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


@app.command()
def worker() -> None:
    """Run the ARQ worker (`arq worker.WorkerSettings` from the project root), logging in LOG_FORMAT from
    its first line: the arq command's own logging set-up writes plain text until on_startup."""
    from arq.worker import run_worker

    from app.observability.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # worker.py sits at the project root, outside the `app` package
    from worker import WorkerSettings

    run_worker(WorkerSettings)  # type: ignore[arg-type]


@app.command()
def migrate() -> None:
    """Apply the database migrations (alembic upgrade head)."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    command.upgrade(config, "head")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
