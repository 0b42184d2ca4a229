"""The report the benchmark writes: bench/RESULTS.md, its verdicts against the targets, and the runs
recorded by hand that it keeps."""

from __future__ import annotations

import statistics
from typing import Any, NamedTuple

from bench.config import LONG_LOANS, MATURE_LOANS, MATURE_PAYMENTS, TARGETS, Config
from bench.load import paired_difference, paired_ratio


def _fmt(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"  # NaN check


def _times(ratio: float) -> str:
    return "n/a" if ratio != ratio else f"{ratio:.2f}x"


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
        *cpu_headline(report),
        f"## Endpoints: {config.customers:,} customers / {config.loans:,} loans",
        "",
        f"{config.connections} concurrent connections; per endpoint {config.warmup:g} s of warm-up, then "
        f"the median of {config.repeats} runs of {config.duration:g} s (create-loan: one run, each customer "
        f"once; check-eligibility, view-loan and view-statement: {2 * config.repeats} alternated runs of "
        f"{config.duration / 2:g} s, see below); {config.workers} API workers (`python -m app.cli serve`: "
        "uvicorn, uvloop, httptools) and "
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
    ratio = statement_ratio(report)
    if ratio == ratio:
        pair = report.get("statement_pair")
        lines += [
            "",
            f"view-statement's p50 is {ratio:.2f}x view-loan's (target <= "
            f"{TARGETS['statement_vs_view_loan_p50']}x)"
            + (
                f": the median of the round-by-round ratios, the two alternated on the same API "
                f"(view-loan {_fmt(pair['p50_ms'], 1)} ms p50, {_fmt(pair['server_cpu_us'])} µs API CPU, in "
                "those rounds)."
                if pair
                else "."
            ),
        ]
        setup = report.get("statement_setup")
        if setup:
            lines[-1] += (
                f" The loans had {setup['payments_per_loan']:.1f} payments each by then; their rows were "
                + (
                    "written by the C extension (app/servicing/_rows.c)."
                    if setup["rows"] == "C"
                    else "written in Python: no C extension was built."
                )
            )
    mature = mature_statement_ratio(report)
    if mature == mature:
        statement, pair = report["mature_statement"], report["mature_pair"]
        target = TARGETS["statement_vs_view_loan_p50"]
        ours_then = (
            f"{_fmt(statement['p50_ms'], 1)} ms p50, {_fmt(statement['server_cpu_us'])} µs API CPU and "
            f"{_fmt(statement['postgres_cpu_us'])} µs PostgreSQL CPU a statement"
        )
        theirs = (
            f"{_fmt(pair['p50_ms'], 1)} ms, {_fmt(pair['server_cpu_us'])} µs and "
            f"{_fmt(pair['postgres_cpu_us'])} µs"
        )
        lines += [
            "",
            f"On {MATURE_LOANS} loans half repaid ({MATURE_PAYMENTS} of their 360 installments paid, one "
            f"payment each), view-statement's p50 is {mature:.2f}x view-loan's (the same target, <= "
            f"{target}x; alternated the same way): {ours_then}, against view-loan's {theirs}. A statement's "
            "cost grows with the loan's payments: each adds 33 bytes PostgreSQL reads and sends, and two "
            "JSON objects the C extension writes.",
        ]
    if "big" in report:
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
        for name, small, result, ratio in book_growth(report):
            lines.append(
                f"| {name} | {_fmt(small['p50_ms'], 2)} | {_fmt(result['p50_ms'], 2)} | "
                f"{_fmt(ratio, 2)} | {_fmt(small['rps'])} | {_fmt(result['rps'])} |"
            )
        if report.get("big_small"):
            lines += [
                "",
                "The two books alternate, run by run, on two APIs (the first book ingested again, as it was "
                "before the writes above); each p50 column is the median of its rounds and the ratio the "
                "median of the round-by-round ratios.",
            ]
    lines += replica_section(config, report)
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
        "- The API runs as deployed: `credit-approval serve`, LOG_LEVEL=INFO, a JSON access line per request "
        "(to a file), metrics, request ids, API-key and body-limit middlewares all on. The logs-quiet API "
        "(LOG_LEVEL=WARNING) and the floor run beside it on the same data; on eligibility and view-loan the "
        "three are measured in turn, run by run, the order flipped each round, so the machine's drift "
        "falls on all of them. view-statement alternates with view-loan in the same way.",
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
        "round-robin, warm-up included; view-statement then reads the same loans with those payments, "
        "after a VACUUM ANALYZE (as for the other tables).",
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


class CpuRow(NamedTuple):
    name: str
    deployed: float  # API µs per request as deployed
    quiet: float  # the same, logs quiet
    floor: float
    deployed_ratio: float  # as deployed / floor, the median of the round-by-round ratios
    quiet_ratio: float
    access_log: float  # the median of the round-by-round differences, deployed - quiet


def _cpu_rows(report: dict[str, Any]) -> list[CpuRow]:
    """The endpoints the floor serves, their three servers alternated run by run (`drive_alternated`)."""
    ours = {r["name"]: r for r in report["service"]}
    quiet = {r["name"]: r for r in report.get("quiet", [])}
    floor = {r["name"]: r for r in report.get("floor", [])}
    nan = float("nan")
    rows = []
    for name in ("check-eligibility", "view-loan"):
        if name not in ours:
            continue
        mine, calm, base = ours[name], quiet.get(name), floor.get(name)
        rows.append(
            CpuRow(
                name,
                mine["server_cpu_us"],
                calm["server_cpu_us"] if calm else nan,
                base["server_cpu_us"] if base else nan,
                paired_ratio(mine, base) if base else nan,
                paired_ratio(calm, base) if calm and base else nan,
                paired_difference(mine, calm) if calm else nan,
            )
        )
    return rows


def statement_ratio(report: dict[str, Any]) -> float:
    """view-statement's p50 over view-loan's: round by round when the two alternated, else of the medians."""
    ours = {r["name"]: r for r in report["service"]}
    statement = ours.get("view-statement")
    view_loan = report.get("statement_pair") or ours.get("view-loan")
    if statement is None or view_loan is None:
        return float("nan")
    return paired_ratio(statement, view_loan, "p50_ms")


def mature_statement_ratio(report: dict[str, Any]) -> float:
    """view-statement's p50 over view-loan's on the half-repaid loans, round by round (NaN when not run)."""
    statement, view_loan = report.get("mature_statement"), report.get("mature_pair")
    if statement is None or view_loan is None:
        return float("nan")
    return paired_ratio(statement, view_loan, "p50_ms")


def book_growth(report: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any], float]]:
    """(endpoint, small-book result, large-book result, p50 ratio) for each endpoint run on both books:
    the median of the round-by-round ratios where the two alternated (`big_small`), else (results of
    earlier runs) the ratio of the large book's p50 to the endpoint run's."""
    paired = {r["name"]: r for r in report.get("big_small", [])}
    ours = {r["name"]: r for r in report["service"]}
    rows = []
    for result in report.get("big", []):
        name = result["name"]
        if name in paired:
            rows.append((name, paired[name], result, paired_ratio(result, paired[name], "p50_ms")))
        elif name in ours:
            rows.append((name, ours[name], result, result["p50_ms"] / ours[name]["p50_ms"]))
    return rows


def cpu_headline(report: dict[str, Any]) -> list[str]:
    """The headline: server CPU per request against the floor's in the same run (issue #16)."""
    rows = _cpu_rows(report)
    if not rows:
        return []
    lines = [
        "## CPU per request against the floor",
        "",
        "Server CPU time per request (all its processes), in the same run as the floor. As deployed: "
        "LOG_LEVEL=INFO, the JSON access line written for every request.",
        "",
        "| Endpoint | API as deployed µs | API, logs quiet µs | Floor µs | As deployed / floor | "
        "Logs quiet / floor | Access log µs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {_fmt(row.deployed)} | {_fmt(row.quiet)} | {_fmt(row.floor)} | "
            f"{_times(row.deployed_ratio)} | {_times(row.quiet_ratio)} | {_fmt(row.access_log)} |"
        )
    lines += [
        "",
        "The API as deployed, the API with its logs quiet and the floor alternate in rounds of half the "
        "endpoint duration, the order flipped each round. Each µs column is the median of its rounds; each "
        "ratio the median of the round-by-round ratios, the access log the median of the round-by-round "
        "differences, so the machine's drift between rounds falls on both sides of each comparison.",
        "",
        f"Targets (issue #16): as deployed at most {TARGETS['cpu_vs_floor']:g}x the floor; the access log at "
        f"most {TARGETS['access_log_us']:g} µs per request.",
        "",
    ]
    return lines


def replica_section(config: Config, report: dict[str, Any]) -> list[str]:
    """The replica run (issue #15): the same API on the same primary, without and with a local replica."""
    runs = report.get("replica")
    if not runs:
        return []
    by = {(r["name"], r["target"]): r for r in runs}
    lines = [
        "",
        f"## Reads on a streaming replica: {config.customers:,} customers / {config.loans:,} loans",
        "",
        "A primary and a hot standby of our own (pg_basebackup -R, the embedded stack's PostgreSQL "
        "binaries), both on this machine. The same API runs twice on that primary: without replicas, and "
        "with DATABASE_REPLICA_URLS naming the standby; the two are measured in turn, run by run. One "
        "machine proves the routing and measures its overhead; it cannot show capacity (the standby "
        "shares the same two cores).",
        "",
        "| Endpoint | Reads on | Requests/s | p50 ms | p99 ms | API CPU µs/req | PostgreSQL CPU µs/req "
        "| Non-2xx / errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, target), result in by.items():
        lines.append(
            f"| {name} | {target} | {_fmt(result['rps'])} | {_fmt(result['p50_ms'], 1)} | "
            f"{_fmt(result['p99_ms'], 1)} | {_fmt(result['server_cpu_us'])} | "
            f"{_fmt(result['postgres_cpu_us'])} | {result['non_2xx']} / {result['errors']} |"
        )
    lines.append("")
    for name in dict.fromkeys(name for name, _ in by):
        primary, replica = by.get((name, "primary")), by.get((name, "replica"))
        if primary and replica:
            extra = paired_difference(replica, primary)
            lines.append(f"- {name}: reading on the replica costs {_fmt(extra)} µs of API CPU per request.")
    lines.append(
        f"- The standby committed {report.get('replica_transactions', 0):,} transactions in the measured "
        "database during the runs: the routed API's reads (and the background checks, two a second per "
        "API process)."
    )
    return lines


def verdicts(report: dict[str, Any]) -> list[str]:
    ours = {r["name"]: r for r in report["service"]}
    floor = {r["name"]: r for r in report.get("floor", [])}
    out = []
    for row in _cpu_rows(report):
        out.append(
            f"{row.name}: CPU {row.deployed_ratio:.2f}x the floor as deployed (target <= "
            f"{TARGETS['cpu_vs_floor']:g}x), access log {row.access_log:.0f} µs (target <= "
            f"{TARGETS['access_log_us']:g})"
        )
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
    ratio = statement_ratio(report)
    if ratio == ratio:
        out.append(
            f"view-statement (360 installments): p50 {ratio:.2f}x view-loan's "
            f"(target <= {TARGETS['statement_vs_view_loan_p50']})"
        )
    mature = mature_statement_ratio(report)
    if mature == mature:
        out.append(
            f"view-statement ({MATURE_PAYMENTS} of 360 installments paid): p50 {mature:.2f}x view-loan's "
            f"(target <= {TARGETS['statement_vs_view_loan_p50']})"
        )
    for name, _, _, ratio in book_growth(report):
        out.append(f"{name}: p50 ratio {ratio:.2f} at the large book (target <= {TARGETS['p50_ratio']})")
    return out
