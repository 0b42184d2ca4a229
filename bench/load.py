"""The load the benchmark drives: the scenarios (which requests, over which ids) and the closed-loop
drivers (wrk with a Lua script, else bench/loadgen.py), measured as requests/s, latencies and CPU per
request."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import resource
import statistics
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from bench.config import (
    BENCH,
    ELIGIBILITY,
    HOST,
    LONG_LOAN,
    LONG_LOANS,
    MATURE_LOANS,
    MATURE_PAYMENTS,
    NEW_LOAN,
    PYTHON,
    Config,
    log,
)
from bench.stack import Server, dsn_of, postgres_cpu_s, query, wait_for_quiet


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
    return _combined(scenario, target, [_measure(server, scenario, config, target) for _ in range(repeats)])


def drive_alternated(runs: dict[str, tuple[Server, Scenario]], config: Config) -> dict[str, Result]:
    """`drive` for two or more (server, scenario) pairs at once, their runs taken in turn (the order
    flipped each round). The keys name the results' targets.

    Why: what separates them (the API as deployed and with its logs quiet; the API and the floor) is
    smaller than what this machine drifts by over the minutes between two separate drives. Twice as
    many rounds of half the duration as `drive`: the report compares them round by round
    (`paired_difference`, `paired_ratio`), and more pairs outvote the odd round the machine was busy
    elsewhere."""
    run = _run_wrk if config.generator == "wrk" else _run_builtin
    if config.warmup > 0:
        for server, scenario in runs.values():
            run(server, scenario, config, config.warmup)
    measured: dict[str, list[Result]] = {target: [] for target in runs}
    order = list(runs.items())
    short = replace(config, duration=config.duration / 2)
    for _ in range(2 * max(1, config.repeats)):
        for target, (server, scenario) in order:
            measured[target].append(_measure(server, scenario, short, target))
        order.reverse()
    return {target: _combined(runs[target][1], target, results) for target, results in measured.items()}


_PER_RUN = ("rps", "p50_ms", "p99_ms", "server_cpu_us")


def _combined(scenario: Scenario, target: str, runs: list[Result]) -> Result:
    """One result from several runs: the median of each figure, the sum of the counts."""

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
        runs=[{k: round(getattr(r, k), 2) for k in _PER_RUN} for r in runs],
    )
    log(
        f"{target:>5} {scenario.name:<17} {result.rps:8.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms  non-2xx {result.non_2xx}  errors {result.errors}  "
        f"cpu/req: server {result.server_cpu_us:.0f} us, postgres {result.postgres_cpu_us:.0f} us"
        + (f"  (median of {len(runs)})" if len(runs) > 1 else "")
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
    customers = [r[0] for r in asyncio.run(query(url, "SELECT customer_id FROM customers"))]
    loans = [
        r[0] for r in asyncio.run(query(url, "SELECT loan_id FROM loans ORDER BY random() LIMIT $1", size))
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
        r[0] for r in asyncio.run(query(url, lendable_sql, today, NEW_LOAN["loan_amount"], emi_bound))
    ]
    rng = random.Random(0)
    rng.shuffle(lendable)
    raw_loans: list[int] = []
    if with_raw:
        raw_loans = [
            r[0] for r in asyncio.run(query(url, "SELECT id FROM raw_loans ORDER BY random() LIMIT $1", size))
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


def view_loan(ids: Ids, raw: bool = False) -> Scenario:
    """The service's loans, or with `raw` the floor's copies of them (raw_loans)."""
    loan_ids = ids.raw_loans if raw else ids.loans
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
        query(
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


def seed_mature_loans(
    url: str, ids: Ids, count: int = MATURE_LOANS, paid: int = MATURE_PAYMENTS
) -> list[tuple[int, int, str]]:
    """`count` 360-installment loans (LONG_LOAN's terms) with their first `paid` installments paid, each
    on its due date with the EMI, as make-payment would have recorded them; the next one is due within a
    month. Written in SQL (make-payment would take minutes for this many), with the schedule's own
    arithmetic (app.credit.schedule.steps). (customer, loan, EMI) each."""
    from decimal import Decimal

    from app.credit.dates import add_months
    from app.credit.policy import installment
    from app.credit.schedule import cents, installments_left, money, rate_ratio, steps

    amount, rate, tenure = Decimal(LONG_LOAN["loan_amount"]), Decimal(LONG_LOAN["interest_rate"]), 360
    emi = installment(amount, rate, tenure)
    today = dt.datetime.now(dt.UTC).date()
    start = add_months(today.replace(day=1), -paid)  # installment `paid` fell due on the 1st of this month
    run = steps(cents(amount), rate_ratio(rate), cents(emi), first=1, tenure=tenure, last=paid)
    outstanding = money(run[-1][3])
    paid_total = money(sum(interest + principal for _, interest, principal, _ in run))
    left = installments_left(outstanding, rate, emi, first=paid + 1, tenure=tenure)
    customers = random.Random(5).choices(ids.customers, k=count)

    async def write() -> list[tuple[int, int, str]]:
        connection = await asyncpg.connect(dsn_of(url))
        try:
            async with connection.transaction():
                loans = await connection.fetch(
                    """
                    INSERT INTO loans (customer_id, loan_amount, tenure, interest_rate, monthly_installment,
                                       emis_paid_on_time, start_date, end_date, outstanding_principal,
                                       installments_paid, amount_paid, repayments_left, last_paid_on)
                    SELECT c, $2, $3, $4, $5, $6, $7, $8, $9, $6, $10, $11, $12 FROM unnest($1::bigint[]) AS c
                    RETURNING customer_id, loan_id
                    """,
                    customers, amount, tenure, rate, emi, paid, start, add_months(start, tenure),
                    outstanding, paid_total, left, add_months(start, paid),
                )  # fmt: skip
                await connection.execute(
                    """
                    INSERT INTO payments (loan_id, installment_number, paid_on, amount, interest, principal,
                                          on_time)
                    SELECT l, k, d, i + p, i, p, true
                    FROM unnest($1::bigint[]) AS l,
                         unnest($2::int[], $3::date[], $4::numeric[], $5::numeric[]) AS s(k, d, i, p)
                    """,
                    [loan["loan_id"] for loan in loans],
                    [number for number, _, _, _ in run],
                    [add_months(start, number) for number, _, _, _ in run],
                    [money(interest) for _, interest, _, _ in run],
                    [money(principal) for _, _, principal, _ in run],
                )
        finally:
            await connection.close()
        return [(loan["customer_id"], loan["loan_id"], str(emi)) for loan in loans]

    return asyncio.run(write())


def statement_setup(url: str) -> dict[str, Any]:
    """What view-statement's run reads: payments a long loan has by then, and which rows writer serves."""
    from app.servicing.rows import ACCELERATED

    (row,) = asyncio.run(query(url, "SELECT count(*)::float / count(DISTINCT loan_id) AS n FROM payments"))
    return {"payments_per_loan": row["n"], "rows": "C" if ACCELERATED else "Python"}


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


def _paired(first: dict[str, Any], second: dict[str, Any], key: str) -> list[tuple[float, float]] | None:
    a, b = [r.get(key) for r in first.get("runs", [])], [r.get(key) for r in second.get("runs", [])]
    if a and len(a) == len(b) and None not in a and None not in b:
        return list(zip(a, b, strict=True))
    return None


def paired_difference(first: dict[str, Any], second: dict[str, Any], key: str = "server_cpu_us") -> float:
    """The median of the round-by-round differences of two alternated results (`drive_alternated`), or
    the difference of their medians when the runs were not recorded in pairs."""
    pairs = _paired(first, second, key)
    if pairs is None:
        return float(first[key] - second[key])
    return float(statistics.median(x - y for x, y in pairs))


def paired_ratio(first: dict[str, Any], second: dict[str, Any], key: str = "server_cpu_us") -> float:
    """The median of the round-by-round ratios of two alternated results, or the ratio of their medians
    when the runs were not recorded in pairs."""
    pairs = _paired(first, second, key)
    if pairs is None:
        return float(first[key] / second[key])
    return float(statistics.median(x / y for x, y in pairs))
