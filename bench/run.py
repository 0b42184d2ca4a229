"""The performance benchmark, in one command: `make bench` (or `python bench/run.py`).

What it does, on this machine, with everything on it (API, PostgreSQL, load generator):

1. Generates workbooks (app/sample_data.py, cached under bench/out/) and ingests them into a new
   database through the real job: a `python -m arq worker.WorkerSettings` subprocess and an enqueued
   ingestion, as production does. Default: 10,000 customers / 100,000 loans.
2. Loads the same workbooks into raw_* tables with the floor's own loader
   (../shared/bench/raw_floor.py, else bench/raw_floor.py) and VACUUM ANALYZEs the database.
3. Starts the API as deployed (`python -m app.cli serve`: uvicorn, uvloop, httptools, LOG_LEVEL=INFO)
   with 2 workers and drives each endpoint at 64 concurrent connections for a fixed time:
   check-eligibility and view-loans over random customers, view-loan over random loans, create-loan over
   distinct customers (last: it writes). wrk with a Lua script when installed, else bench/loadgen.py.
   Eligibility and view-loan alternate, run by run, with a second API whose logs are quiet
   (LOG_LEVEL=WARNING): the difference is what the access log costs.
4. Starts the floor (`uvicorn raw_floor:app --workers 2`) and drives its two endpoints the same way.
5. Repeats eligibility, view-loan and view-loans on a second database of 100,000 customers / 1,000,000
   loans (ten loans a customer, as before: the book grows, not each customer's history), alternated run
   by run with the same endpoints on a fresh copy of the first book, and prints the ratio of p50 latencies.
6. Runs the ingestion benchmark (bench/ingest_bench.py's main()).
7. Writes bench/RESULTS.md (and the raw figures to bench/out/results.json).

Sizes and durations come from flags or BENCH_* variables (`--help`); `--quick` (BENCH_QUICK=1) is a smoke
run of about a minute and a half. DATABASE_URL (or TEST_DATABASE_URL) must be allowed to CREATE DATABASE;
the benchmark never touches the database it names. REDIS_URL is the Redis for the job queue.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.config import BENCH, OUT, Config, log, parse_args  # noqa: E402
from bench.load import (  # noqa: E402
    create_loan,
    drive,
    drive_alternated,
    eligibility,
    get_customer,
    make_payment,
    sample_ids,
    seed_long_loans,
    seed_mature_loans,
    statement_setup,
    view_loan,
    view_loans,
    view_statement,
)
from bench.report import verdicts, write_report  # noqa: E402
from bench.stack import (  # noqa: E402
    database,
    describe_machine,
    dsn_of,
    ingest,
    load_floor,
    replicated,
    start_api,
    start_floor,
    transactions,
    vacuum_analyze,
    workbooks,
)


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
        # The API as deployed, the same API with its logs quiet (LOG_LEVEL=WARNING) and the floor, side by
        # side: eligibility and view-loan alternate between the three, run by run, so the access log's
        # cost and the ratio to the floor are measured in the same minutes, not across the machine's drift.
        with (
            start_api(url, config.redis_url, config.workers) as api,
            start_api(url, config.redis_url, config.workers, log_level="WARNING") as quiet,
            start_floor(config.floor, url, config.workers) if config.floor else nullcontext() as floor,
        ):
            report["service"], report["quiet"], report["floor"] = [], [], []
            checks = eligibility(ids)  # the floor answers the same bodies
            for ours, raw in ((checks, checks), (view_loan(ids), view_loan(ids, raw=True))):
                sides = {"api": (api, ours), "quiet": (quiet, ours)}
                if floor is not None:
                    sides["floor"] = (floor, raw)
                measured = drive_alternated(sides, config)
                for target, key in (("api", "service"), ("quiet", "quiet"), ("floor", "floor")):
                    if target in measured:
                        report[key].append(asdict(measured[target]))
            quiet.stop()
            if floor is not None:
                floor.stop()
            report["service"] += [
                asdict(drive(api, scenario, config, "api"))
                for scenario in (view_loans(ids), get_customer(ids), create_loan(ids))
            ]
            long_loans = seed_long_loans(url, ids)
            report["service"].append(asdict(drive(api, make_payment(long_loans), config, "api")))
            report["statement_setup"] = statement_setup(url)
            # The payments just written, as autovacuum would leave them within a minute or so (the
            # visibility map set, so the statement's payments come from an index-only scan), as every
            # other table here is measured.
            vacuum_analyze(url)
            # view-statement's bound is relative to view-loan's p50: the two alternate, run by run.
            pair = drive_alternated(
                {"api": (api, view_statement(long_loans)), "view-loan": (api, view_loan(ids))}, config
            )
            report["service"].append(asdict(pair["api"]))
            report["statement_pair"] = asdict(pair["view-loan"])
            # The same, on loans half repaid (bench/config.py MATURE_PAYMENTS): how the statement's cost
            # grows with the payments a loan has.
            mature = seed_mature_loans(url, ids)
            vacuum_analyze(url)
            pair = drive_alternated(
                {"api": (api, view_statement(mature)), "view-loan": (api, view_loan(ids))}, config
            )
            report["mature_statement"] = asdict(pair["api"])
            report["mature_pair"] = asdict(pair["view-loan"])
    if config.replica:
        log("replica run: a primary and a streaming replica of our own, the small book ingested ...")
        with replicated(config.redis_url, small_files) as (primary_url, replica_url):
            ids = sample_ids(primary_url, with_raw=False)
            # The same API on the same primary, with and without the replica: alternated, so the difference
            # is what routing costs (and what moving the reads off the primary buys), not the drift.
            with (
                start_api(primary_url, config.redis_url, config.workers) as direct,
                start_api(primary_url, config.redis_url, config.workers, replica_urls=replica_url) as routed,
            ):
                before = transactions(replica_url)
                report["replica"] = []
                for scenario in (eligibility(ids), view_loan(ids)):
                    both = drive_alternated(
                        {"primary": (direct, scenario), "replica": (routed, scenario)}, config
                    )
                    report["replica"] += [asdict(both["primary"]), asdict(both["replica"])]
                time.sleep(11)  # an idle backend's statistics reach pg_stat_database within 10 s
                report["replica_transactions"] = transactions(replica_url) - before
    if config.big:
        big_files = workbooks(config.big_customers, config.big_loans)
        # The two books side by side, their runs alternated: measured minutes apart, the machine's drift
        # moved the p50 ratio by more than the book's size did (view-loan 1.43 one run, 0.94 the run
        # before, same code). The small book is ingested again, as it was before create-loan and the
        # payments wrote to the first one: ten loans a customer in both.
        with (
            database(config.database_url, "big") as url,
            database(config.database_url, "small_again") as small_url,
        ):
            log(f"ingesting {config.big_loans:,} loans through the ARQ worker ...")
            report["setup"]["big_ingest_seconds"] = ingest(url, config.redis_url, big_files)["seconds"]
            ingest(small_url, config.redis_url, small_files)
            vacuum_analyze(url)
            vacuum_analyze(small_url)
            ids, small_ids = sample_ids(url, with_raw=False), sample_ids(small_url, with_raw=False)
            with (
                start_api(url, config.redis_url, config.workers) as api,
                start_api(small_url, config.redis_url, config.workers) as small_api,
            ):
                report["big"], report["big_small"] = [], []
                for build in (eligibility, view_loan, view_loans):
                    both = drive_alternated(
                        {"big": (api, build(ids)), "small": (small_api, build(small_ids))}, config
                    )
                    report["big"].append(asdict(both["big"]))
                    report["big_small"].append(asdict(both["small"]))

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
