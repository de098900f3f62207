"""Mixed soak: bounded load of every ingest shape against gunicorn while rollups and alert
sweeps run beside it, then the books must balance.

One run, bounded in time (`--duration`, default 600 s; `--short` about 25 s), loopback only:

1. drops and recreates its own database (`--database`, default tokenbill_soak) on the server
   that DATABASE_URL names, empties its own Redis database (`--redis-db`, never db 0: the
   balance mirror is keyed by tenant id, which a fresh database reuses) and migrates;
2. creates tenants in three time zones on one price plan, each with a funded wallet, an API key
   (ingest, read), an email channel and a spend alert rule;
3. starts gunicorn (portal.wsgi, DEBUG off, as bench/ingest.py does) on a free 127.0.0.1 port;
4. client processes send a mix: single events, batches of 2..50, 5 % exact duplicates (an
   earlier request_id with the same body, singly or inside a batch), 1 % late events (2 hours
   to 30 days in the past, inside the accepted horizon), and authorize holds each followed,
   a few requests later, by the usage event that settles it;
5. meanwhile sweeper processes loop over the services the beat schedule runs: the incremental
   rollup (metering.services.rollup.rollup_refresh) and the alert evaluation of every tenant;
6. after the load, one last incremental rollup, then the invariants, through the API where it
   can answer and through the database where it cannot:
   - stored == unique accepted (per tenant: rows, GET /api/v1/usage, the clients' counts),
     and every exact duplicate was answered as a duplicate;
   - wallet == top-ups - charges: GET /api/v1/balance == Wallet == sum(ledger), no hold left
     open, and the usage charges == the stored costs within rounding;
   - rollups == events: sum(DailyUsage) == sum(UsageEvent) per tenant and tenant-local day;
   - Redis == PostgreSQL: billing.services.reconcile.balances_reconcile(fix=False) is clean;
   - alerts: one event per rule x threshold x period, no periodic job recorded a failure, no
     5xx or transport error, every sweeper exited cleanly.

It prints events/s and one `[ok]` / `[FAIL]` line per invariant, and exits 1 if one broke.

    DEBUG=0 SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/soak.py --short --redis-db 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import random
import sys
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import database_urls, recreate_database  # noqa: E402 - bench/ is on sys.path
from benchserver import Server, add_server_arguments, resolve_server_arguments, start_server  # noqa: E402
from ingest import Connection  # noqa: E402 - the benches' minimal HTTP/1.1 client

TIMEZONES = ("UTC", "Asia/Shanghai", "America/New_York")
MODELS = ("gpt-4o", "gpt-4o-mini-2024-07-18", "claude-sonnet-4")
TOPUP = Decimal("1000000")
SPEND_ALERT = Decimal("5")  # USD a month: crossed within seconds, so the sweeps claim alerts
LATE_MAX = dt.timedelta(days=30)
EVENTS, BATCH, AUTHORIZE = "/api/v1/events", "/api/v1/events/batch", "/api/v1/authorize"


# --- Options ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Mixed ingest soak with concurrent rollups and alert sweeps; checks the invariants "
        "(see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--short", action="store_true", help="a quick run: 25 s, fewer clients (the test suite's)")
    parser.add_argument("--database", default="tokenbill_soak", help="database to drop, create and use")
    parser.add_argument(
        "--redis-db", type=int, help="Redis database number to empty and use (default: REDIS_URL's own, never 0)"
    )
    parser.add_argument("--clients", type=int, default=6, help="client processes")
    parser.add_argument("--tenants", type=int, default=3, help="tenants (time zones rotate)")
    parser.add_argument("--sweepers", type=int, default=2, help="processes looping rollup + alert sweeps")
    parser.add_argument("--sweep-interval", type=float, default=1.0, help="seconds between a sweeper's rounds")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of events that are exact duplicates")
    parser.add_argument("--late", type=float, default=0.01, help="share of events stamped hours or days ago")
    parser.add_argument("--holds", type=float, default=0.05, help="share of requests that are authorize holds")
    parser.add_argument("--seed", type=int, default=20261207, help="random seed of the clients' mix")
    add_server_arguments(parser)
    parser.set_defaults(workers=3)
    args = parser.parse_args(argv)
    if args.short:
        args.duration = min(args.duration, 25.0)
        args.clients, args.sweepers, args.workers = min(args.clients, 3), 1, min(args.workers, 2)
    if not 1 <= args.duration <= 6 * 3600:
        parser.error("--duration must be 1 s .. 6 h")
    if min(args.clients, args.tenants, args.sweepers, args.workers) < 1:
        parser.error("client, tenant, sweeper and worker counts must be >= 1")
    if not (args.database.startswith("tokenbill_soak") and args.database.replace("_", "").isalnum()):
        parser.error("--database must start with tokenbill_soak and hold letters, digits and underscores")
    for name in ("duplicates", "late", "holds"):
        if not 0 <= getattr(args, name) <= 0.5:
            parser.error(f"--{name} must be a share between 0 and 0.5")
    resolve_server_arguments(args)
    return args


def redis_url(args: argparse.Namespace) -> str:
    base = os.environ.get("REDIS_URL", "")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("redis", "rediss"):
        raise SystemExit(f"REDIS_URL must name a Redis server (got {base!r}); try `make bench`.")
    db = args.redis_db if args.redis_db is not None else int(parts.path.strip("/") or 0)
    if db == 0:
        raise SystemExit("The soak empties its Redis database: name one other than 0 with --redis-db.")
    return parts._replace(path=f"/{db}").geturl()


# --- Set-up ----------------------------------------------------------------------------------


@dataclass
class TenantFixture:
    tenant_id: int
    key_id: int
    secret: str
    timezone: str


def create_fixture(tenants: int) -> list[TenantFixture]:
    from accounts import services  # noqa: PLC0415
    from alerts.services import alert_rule_create, notification_channel_create  # noqa: PLC0415
    from billing.services.pricing import plan_get_or_create, price_add  # noqa: PLC0415
    from billing.services.topups import wallet_topup  # noqa: PLC0415

    since = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    plan = plan_get_or_create(slug="soak", name="Soak plan", currency="USD", actor_label="soak")
    for pattern, rates in (
        ("gpt-4o", ("2.5", "10", "1.25")),
        ("gpt-4o-mini*", ("0.15", "0.6", "0.075")),
        ("claude-sonnet-4", ("3", "15", "0.3")),
    ):
        price_add(
            plan=plan,
            model_pattern=pattern,
            input_per_mtok=Decimal(rates[0]),
            output_per_mtok=Decimal(rates[1]),
            cached_input_per_mtok=Decimal(rates[2]),
            effective_from=since,
            actor_label="soak",
        )
    rows = []
    for number in range(tenants):
        zone = TIMEZONES[number % len(TIMEZONES)]
        tenant = services.tenant_create(
            name=f"Soak {number}", slug=f"soak-{number}", timezone_name=zone, price_plan_id=plan.pk, actor_label="soak"
        )
        key, secret = services.api_key_create(tenant=tenant, name="soak", scopes=["ingest", "read"], actor_label="soak")
        wallet_topup(tenant=tenant, amount=TOPUP, reference="soak", actor_label="soak")
        channel = notification_channel_create(
            tenant=tenant, kind="email", name="ops", config={"recipients": ["ops@soak.invalid"]}
        )
        alert_rule_create(
            tenant=tenant,
            kind="spend",
            channels=[channel],
            amount=SPEND_ALERT,
            threshold_unit="percent",
            thresholds=("50", "100"),
        )
        rows.append(TenantFixture(tenant_id=tenant.pk, key_id=key.pk, secret=secret, timezone=zone))
    return rows


# --- Clients ---------------------------------------------------------------------------------


@dataclass
class ClientResult:
    tenant_id: int
    requests: int = 0
    events_sent: int = 0  # every event in every body, duplicates and settling events included
    accepted: int = 0
    duplicates_sent: int = 0
    duplicates_confirmed: int = 0
    late_sent: int = 0
    holds_placed: int = 0
    holds_settled: int = 0
    unexpected: int = 0  # an answer the soak did not expect (a 4xx/5xx, a rejected item)
    errors: int = 0  # transport errors and 5xx
    statuses: Counter = field(default_factory=Counter)
    first_problem: str = ""
    earliest: str = ""  # the oldest timestamp sent (the usage query's lower bound)


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def client_main(spec: dict, queue: mp.Queue) -> None:
    """One client process: a seeded mix of requests until the deadline, with its own tally."""
    rng = random.Random(spec["seed"])
    conn = Connection(spec["port"])
    headers = {"Authorization": f"Bearer {spec['secret']}", "Content-Type": "application/json"}
    tag = f"{spec['index']}-{os.urandom(3).hex()}"
    result = ClientResult(tenant_id=spec["tenant_id"])
    sent_ok: list[dict] = []  # accepted bodies, the pool exact duplicates are drawn from
    to_settle: list[dict] = []  # holds placed, settled a few requests later
    seq = 0
    earliest = dt.datetime.now(dt.UTC)

    def note(problem: str, *, error: bool = False) -> None:
        result.unexpected += 1
        result.errors += error
        result.first_problem = result.first_problem or problem

    def fresh(now: dt.datetime) -> dict:
        nonlocal seq, earliest
        seq += 1
        moment = now
        if rng.random() < spec["late"]:
            moment = now - dt.timedelta(seconds=rng.uniform(2 * 3600, LATE_MAX.total_seconds()))
            earliest = min(earliest, moment)
            result.late_sent += 1
        input_tokens = rng.randint(50, 6000)
        return {
            "request_id": f"soak-{tag}-{seq}",
            "model": rng.choice(MODELS),
            "input_tokens": input_tokens,
            "output_tokens": rng.randint(1, 1200),
            "cached_input_tokens": input_tokens // 2 if rng.random() < 0.3 else 0,
            "timestamp": _stamp(moment),
            "metadata": {"client": spec["index"], "feature": rng.choice(("chat", "search", "embed"))},
        }

    def pick(now: dt.datetime) -> tuple[dict, bool]:
        if sent_ok and rng.random() < spec["duplicates"]:
            return rng.choice(sent_ok), True
        return fresh(now), False

    def post(path: str, body: object) -> tuple[int, dict | None]:
        try:
            status, payload = conn.request("POST", path, orjson.dumps(body), headers)
        except (OSError, EOFError) as exc:
            conn.close()
            note(f"{path}: {exc!r}", error=True)
            return 0, None
        result.requests += 1
        result.statuses[status] += 1
        if status >= 500:
            note(f"{path}: HTTP {status} {payload[:200]!r}", error=True)
        return status, (orjson.loads(payload) if payload else None)

    def remember(event: dict) -> None:
        if len(sent_ok) < 500:
            sent_ok.append(event)
        else:
            sent_ok[rng.randrange(500)] = event

    def single(event: dict, duplicate: bool) -> None:
        status, body = post(EVENTS, event)
        result.events_sent += 1
        result.duplicates_sent += duplicate
        if status == 201 and not duplicate:
            result.accepted += 1
            remember(event)
        elif status == 200 and body and body.get("duplicate") and duplicate:
            result.duplicates_confirmed += 1
        elif status:
            note(f"POST {EVENTS} {'duplicate' if duplicate else 'fresh'}: HTTP {status} {body}")

    def batch(now: dt.datetime) -> None:
        items = [pick(now) for _ in range(rng.randint(2, 50))]
        seen: set[str] = set()
        items = [(e, d) for e, d in items if not (e["request_id"] in seen or seen.add(e["request_id"]))]
        status, body = post(BATCH, {"events": [event for event, _ in items]})
        result.events_sent += len(items)
        result.duplicates_sent += sum(duplicate for _, duplicate in items)
        if status != 200 or not body:
            if status:
                note(f"POST {BATCH}: HTTP {status} {body}")
            return
        for (event, duplicate), outcome in zip(items, body["results"], strict=True):
            if outcome["status"] == "accepted" and not duplicate:
                result.accepted += 1
                remember(event)
            elif outcome["status"] == "duplicate" and duplicate:
                result.duplicates_confirmed += 1
            else:
                note(f"batch item {event['request_id']}: {outcome}")

    def hold(now: dt.datetime) -> None:
        event = fresh(now)
        request = {
            "model": event["model"],
            "estimated_input_tokens": event["input_tokens"],
            "max_output_tokens": 1200,
            "hold": True,
            "request_id": event["request_id"],
        }
        status, body = post(AUTHORIZE, request)
        if status == 200 and body and body.get("allowed") and body.get("hold_id"):
            result.holds_placed += 1
            to_settle.append(event)
        elif status:
            note(f"POST {AUTHORIZE}: HTTP {status} {body}")

    def settle() -> None:
        event = to_settle.pop(0)
        before = result.accepted
        single(event, False)
        result.holds_settled += result.accepted - before

    deadline = spec["deadline"]
    while time.monotonic() < deadline:
        now = dt.datetime.now(dt.UTC)
        if to_settle and (len(to_settle) > 3 or rng.random() < 0.5):
            settle()
        elif rng.random() < spec["holds"]:
            hold(now)
        elif rng.random() < 0.6:
            single(*pick(now))
        else:
            batch(now)
    while to_settle:  # every hold is settled before the client stops
        settle()
    conn.close()
    result.earliest = _stamp(earliest)
    queue.put(result)


# --- Sweepers --------------------------------------------------------------------------------


def sweeper_main(index: int, deadline: float, interval: float, queue: mp.Queue) -> None:
    """The beat's periodic services in a loop: incremental rollup, then every tenant's alerts."""
    from alerts.services import alerts_evaluate_recorded, tenants_with_rules  # noqa: PLC0415
    from metering.services.rollup import rollup_refresh  # noqa: PLC0415

    rounds = rebuilt = claimed = 0
    time.sleep(index * interval / 2)  # staggered, yet overlapping
    while time.monotonic() < deadline:
        rebuilt += len(rollup_refresh())
        for tenant_id in tenants_with_rules():
            claimed += len(alerts_evaluate_recorded(tenant_id=tenant_id).new_events)
        rounds += 1
        time.sleep(interval)
    queue.put({"sweeper": index, "rounds": rounds, "rebuilt": rebuilt, "claimed": claimed})


# --- Checks ----------------------------------------------------------------------------------


Check = tuple[str, bool, str]


def _get(server: Server, path: str, secret: str) -> dict:
    conn = Connection(server.port)
    try:
        status, payload = conn.request("GET", path, b"", {"Authorization": f"Bearer {secret}"})
    finally:
        conn.close()
    if status != 200:
        raise SystemExit(f"GET {path}: HTTP {status} {payload[:300]!r}")
    return orjson.loads(payload)


def check_stored(server: Server, fixture: list[TenantFixture], results: list[ClientResult]) -> list[Check]:
    from metering.models import UsageEvent  # noqa: PLC0415

    accepted = Counter()
    for r in results:
        accepted[r.tenant_id] += r.accepted
    earliest = min((r.earliest for r in results), default=_stamp(dt.datetime.now(dt.UTC)))
    start = dt.datetime.fromisoformat(earliest.replace("Z", "+00:00")) - dt.timedelta(days=1)
    end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    mismatches, stored_total, api_total = [], 0, 0
    for row in fixture:
        stored = UsageEvent.objects.filter(tenant_id=row.tenant_id).count()
        query = urllib.parse.urlencode({"from": _stamp(start), "to": _stamp(end), "group_by": "model"})
        usage = _get(server, f"/api/v1/usage?{query}", row.secret)
        via_api = sum(item["requests"] for item in usage["results"])
        stored_total, api_total = stored_total + stored, api_total + via_api
        if not stored == via_api == accepted[row.tenant_id]:
            mismatches.append(f"tenant {row.tenant_id}: {stored} stored, {via_api} via API, {accepted[row.tenant_id]}")
    sent = sum(r.duplicates_sent for r in results)
    confirmed = sum(r.duplicates_confirmed for r in results)
    return [
        (
            "stored == unique accepted",
            not mismatches,
            "; ".join(mismatches)
            or f"{stored_total:,} stored, {api_total:,} via GET /usage, {sum(accepted.values()):,} accepted",
        ),
        ("exact duplicates answered as duplicates", sent == confirmed, f"{confirmed:,} of {sent:,}"),
    ]


def check_money(server: Server, fixture: list[TenantFixture]) -> list[Check]:
    from django.db.models import Count, Sum  # noqa: PLC0415

    from billing import selectors  # noqa: PLC0415
    from billing.models import LedgerEntry  # noqa: PLC0415
    from metering.models import UsageEvent  # noqa: PLC0415

    wallet_problems, charge_problems, open_holds, details = [], [], 0, []
    for row in fixture:
        balance = _get(server, "/api/v1/balance", row.secret)
        by_kind = dict(
            LedgerEntry.objects.filter(tenant_id=row.tenant_id)
            .values_list("kind")
            .annotate(total=Sum("amount"))
            .values_list("kind", "total")
        )
        ledger = selectors.ledger_sum(tenant_id=row.tenant_id)
        wallet = selectors.wallet_balance(tenant_id=row.tenant_id)
        topups, charges = by_kind.get("topup", Decimal(0)), -by_kind.get("usage", Decimal(0))
        holds = by_kind.get("hold", Decimal(0)) + by_kind.get("release", Decimal(0))
        open_holds += balance["holds_count"]
        if not (Decimal(balance["balance"]) == wallet == ledger == topups - charges + holds) or holds:
            wallet_problems.append(
                f"tenant {row.tenant_id}: API {balance['balance']}, wallet {wallet}, ledger {ledger}, "
                f"top-ups {topups} - charges {charges}, holds {holds}"
            )
        usage = LedgerEntry.objects.filter(tenant_id=row.tenant_id, kind="usage").aggregate(n=Count("id"))
        cost = UsageEvent.objects.filter(tenant_id=row.tenant_id).aggregate(c=Sum("cost"))["c"] or Decimal(0)
        # One charge per request (a batch's summed cost), each rounded once to the micro-unit.
        if abs(charges - cost) > Decimal("0.0000005") * (usage["n"] or 0):
            charge_problems.append(f"tenant {row.tenant_id}: charged {charges}, stored cost {cost}")
        details.append(f"{topups - charges}")
    return [
        (
            "wallet == top-ups - charges (API, wallet, sum of ledger)",
            not wallet_problems,
            "; ".join(wallet_problems) or f"balances {', '.join(details)}",
        ),
        ("no hold left open", open_holds == 0, f"{open_holds} open"),
        ("charges == stored costs (within rounding)", not charge_problems, "; ".join(charge_problems) or "per tenant"),
    ]


def check_rollups() -> Check:
    from django.db import connection  # noqa: PLC0415

    from accounts.models import Tenant  # noqa: PLC0415
    from metering.models import DailyUsage, UsageEvent  # noqa: PLC0415

    figures = "count(*), sum(e.input_tokens), sum(e.output_tokens), sum(e.cached_input_tokens), "
    figures += "sum(e.cache_write_tokens), coalesce(sum(e.cost), 0), count(*) FILTER (WHERE e.cost IS NULL)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT e.tenant_id, (e.occurred_at AT TIME ZONE t.timezone)::date, {figures} "
            f"FROM {UsageEvent._meta.db_table} e JOIN {Tenant._meta.db_table} t ON t.id = e.tenant_id GROUP BY 1, 2"
        )
        events = {(row[0], row[1]): tuple(row[2:]) for row in cursor.fetchall()}
        cursor.execute(
            "SELECT tenant_id, day, sum(requests), sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), "
            "sum(cache_write_tokens), sum(cost), sum(unpriced_requests) "
            f"FROM {DailyUsage._meta.db_table} GROUP BY 1, 2"
        )
        rollups = {(row[0], row[1]): tuple(row[2:]) for row in cursor.fetchall()}
    wrong = sorted(key for key in events.keys() | rollups.keys() if events.get(key) != rollups.get(key))
    detail = f"{len(events)} tenant-days, {sum(v[0] for v in events.values()):,} events"
    if wrong:
        tenant_id, day = wrong[0]
        detail = (
            f"{len(wrong)} of {len(events | rollups)} tenant-days differ; first: tenant {tenant_id} {day}: "
            f"events {events.get(wrong[0])}, rollup {rollups.get(wrong[0])}"
        )
    return ("rollups == events (per tenant and local day)", not wrong, detail)


def check_mirror(fixture: list[TenantFixture]) -> Check:
    from django.conf import settings  # noqa: PLC0415

    from billing.services.reconcile import balances_reconcile  # noqa: PLC0415

    reports = [balances_reconcile(tenant_id=row.tenant_id, fix=False) for row in fixture]
    drifts = sum(len(report.drifts) + len(report.wallets) for report in reports)
    name = "Redis == PostgreSQL (reconcile, fix=False)"
    return (name, all(report.clean for report in reports), f"{settings.BALANCE_BACKEND} backend, {drifts} drifts")


def check_alerts(fixture: list[TenantFixture]) -> list[Check]:
    from django.db.models import Count  # noqa: PLC0415

    from alerts.models import AlertEvent  # noqa: PLC0415
    from billing.models import JobFailure  # noqa: PLC0415

    claims = AlertEvent.objects.values("rule_id", "threshold", "period").annotate(n=Count("id")).filter(n__gt=1).count()
    claimed = AlertEvent.objects.count()
    failures = list(JobFailure.objects.values_list("job", "tenant_id", "error")[:3])
    return [
        (
            "alerts claimed once (rule x threshold x period)",
            claims == 0 and claimed >= len(fixture),
            f"{claimed} alert events, {claims} claimed twice",
        ),
        ("no periodic job failed for a tenant", not failures, str(failures) if failures else "0 job failures"),
    ]


# --- Run -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    os.environ["REDIS_URL"] = redis_url(args)
    os.environ.pop("CELERY_TASK_ALWAYS_EAGER", None)
    maintenance_url, soak_url = database_urls(args.database)
    recreate_database(maintenance_url, args.database)
    os.environ["DATABASE_URL"] = soak_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django  # noqa: PLC0415

    django.setup()
    import redis  # noqa: PLC0415
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connections  # noqa: PLC0415

    from metering.services.rollup import rollup_refresh  # noqa: PLC0415

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.flushdb()  # this soak's own database (never 0): balances, holds, queued alert tasks
    client.close()
    call_command("migrate", verbosity=0, interactive=False)
    fixture = create_fixture(args.tenants)
    connections.close_all()
    print(
        f"setup: database {args.database}, Redis {os.environ['REDIS_URL'].rsplit('/', 1)[-1]}, "
        f"{args.tenants} tenants ({', '.join(row.timezone for row in fixture)}), "
        f"{time.monotonic() - began:.1f} s",
        flush=True,
    )

    server = start_server(args, database_url=soak_url, name="soak")
    fork = mp.get_context("fork")
    queue: mp.Queue = fork.Queue()
    sweep_queue: mp.Queue = fork.Queue()
    try:
        start = time.monotonic()
        deadline = start + args.duration
        clients = []
        for index in range(args.clients):
            row = fixture[index % len(fixture)]
            spec = {
                "index": index,
                "port": server.port,
                "secret": row.secret,
                "tenant_id": row.tenant_id,
                "deadline": deadline,
                "seed": args.seed + index,
                "duplicates": args.duplicates,
                "late": args.late,
                "holds": args.holds,
            }
            clients.append(fork.Process(target=client_main, args=(spec, queue), daemon=True))
        sweepers = [
            fork.Process(target=sweeper_main, args=(i, deadline, args.sweep_interval, sweep_queue), daemon=True)
            for i in range(args.sweepers)
        ]
        for process in clients + sweepers:
            process.start()
        print(
            f"load: {args.clients} clients, {args.sweepers} sweepers, gunicorn {args.workers} x "
            f"{args.worker_class}, {args.duration:.0f} s",
            flush=True,
        )
        results: list[ClientResult] = [queue.get(timeout=args.duration + 300) for _ in clients]
        seconds = time.monotonic() - start
        sweeps = [sweep_queue.get(timeout=300) for _ in sweepers]
        for process in clients + sweepers:
            process.join(timeout=60)
        rollup_refresh()  # the last incremental run, as the beat's next one would
        checks: list[Check] = []
        checks.extend(check_stored(server, fixture, results))
        checks.extend(check_money(server, fixture))
        checks.append(check_rollups())
        checks.append(check_mirror(fixture))
        checks.extend(check_alerts(fixture))
        errors = sum(r.errors for r in results)
        unexpected = sum(r.unexpected for r in results)
        problem = next((r.first_problem for r in results if r.first_problem), "")
        checks.append(("no 5xx or transport error", errors == 0, f"{errors} errors {problem}".strip()))
        checks.append(("every answer as expected", unexpected == 0, f"{unexpected} unexpected {problem}".strip()))
        bad_exit = [p.exitcode for p in clients + sweepers if p.exitcode != 0]
        checks.append(("clients and sweepers exited cleanly", not bad_exit, f"exit codes {bad_exit}"))
    finally:
        server.stop()

    requests, events = sum(r.requests for r in results), sum(r.events_sent for r in results)
    accepted = sum(r.accepted for r in results)
    statuses = sum((r.statuses for r in results), Counter())
    print()
    print(f"soak: {seconds:.0f} s on {os.cpu_count()} cores (load average before {load_before:.2f})")
    print(
        f"  {events:,} events in {requests:,} requests: {events / seconds:,.0f} events/s, "
        f"{accepted / seconds:,.0f} accepted/s, {requests / seconds:,.0f} requests/s"
    )
    print(
        f"  {accepted:,} accepted, {sum(r.duplicates_sent for r in results):,} exact duplicates, "
        f"{sum(r.late_sent for r in results):,} late, {sum(r.holds_placed for r in results):,} holds "
        f"({sum(r.holds_settled for r in results):,} settled); HTTP {dict(sorted(statuses.items()))}"
    )
    print(
        f"  sweepers: {sum(s['rounds'] for s in sweeps)} rounds, {sum(s['rebuilt'] for s in sweeps)} "
        f"tenant-days rebuilt, {sum(s['claimed'] for s in sweeps)} alerts claimed"
    )
    print("invariants:")
    for name, ok, detail in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")
    print(f"whole run: {time.monotonic() - began:.0f} s; gunicorn log: {server.log_path}")
    failed = [name for name, ok, _ in checks if not ok]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
