"""Authorize benchmark: p50/p99 latency and throughput at a fixed offered rate, Redis vs database.

One run (about a minute with the defaults), loopback traffic only:

1. drops and recreates its own database (`--database`, default tokenbill_bench_authorize) on
   the server DATABASE_URL names, migrates it, creates a tenant (price plan, a hard daily token
   quota, a large top-up) and an API key; removes that tenant's keys from REDIS_URL's database
   (only keys with its hash tag: other data in that Redis database is left alone);
2. counts, in process after a warm-up call, the database queries and Redis calls of one
   authorize on each backend (the steady-state budget: one query for the key, one script);
3. starts two gunicorn servers on free 127.0.0.1 ports, identical but for BALANCE_BACKEND
   (redis, db), and offers each the same open-loop load: `--rate` requests/s for `--duration`
   seconds from `--clients` processes, first checks (hold=false), then holds (hold=true, fresh
   request_ids), then one client in a closed loop (the service time without queueing), and
   holds once more on a Redis server with HOLD_SYNCHRONOUS_COMMIT=0, then checks and holds on
   both backends for a second tenant whose key and tenant carry rate limits (requests, tokens,
   parallel) set far above the load, to show what judging them costs. Latency counts from the
   scheduled send time, so queueing cannot hide;
4. checks wallet == sum(ledger) and that Redis agrees with PostgreSQL (the reconciler's view),
   then prints the table.

Run with `make bench` (the test environment) or directly:
    DEBUG=0 SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        REDIS_URL=redis://127.0.0.1:6379/11 .venv/bin/python bench/authorize.py
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import database_urls, recreate_database  # noqa: E402 - bench/ is on sys.path
from benchserver import Server, add_server_arguments, resolve_server_arguments, start_server  # noqa: E402

PATH = "/api/v1/authorize"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark POST /api/v1/authorize on both balance backends (see module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database", default="tokenbill_bench_authorize", help="database to drop, create and use")
    parser.add_argument("--rate", type=float, default=200.0, help="offered requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load per server")
    parser.add_argument("--clients", type=int, default=8, help="load generator processes sharing the rate")
    parser.add_argument(
        "--only", default="", help="run labels to keep, comma-separated (redis, db, redis-nf, redis-rl, db-rl)"
    )
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 60 or not 0 < args.rate <= 5000:
        parser.error("--duration must be in (0, 60] s and --rate in (0, 5000] req/s")
    if min(args.clients, args.workers) < 1:
        parser.error("--clients and --workers must be >= 1")
    if not args.database.replace("_", "").isalnum():
        parser.error("--database must be letters, digits and underscores")
    resolve_server_arguments(args)
    return args


# --- Setup -------------------------------------------------------------------------------------


@dataclass
class Fixture:
    tenant_id: int
    secret: str


# Rate limits far above the offered load: the phases measure what judging them costs.
GENEROUS_LIMITS = {"rpm_limit": 10**9, "tpm_limit": 10**12, "max_parallel_requests": 10**9}


def create_fixture(slug: str, *, limits: bool = False) -> Fixture:
    import datetime as dt  # noqa: PLC0415

    from accounts import services  # noqa: PLC0415
    from billing.services.pricing import plan_get_or_create, price_add  # noqa: PLC0415
    from billing.services.quotas import quota_create  # noqa: PLC0415
    from billing.services.topups import wallet_topup  # noqa: PLC0415

    plan = plan_get_or_create(slug="bench", name="Bench plan", currency="USD", actor_label="bench")
    if not plan.prices.exists():
        price_add(
            plan=plan,
            model_pattern="gpt-4o",
            input_per_mtok=Decimal("2.5"),
            output_per_mtok=Decimal("10"),
            effective_from=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            actor_label="bench",
        )
    tenant = services.tenant_create(name=f"Bench {slug}", slug=slug, price_plan_id=plan.pk, actor_label="bench")
    key, secret = services.api_key_create(tenant=tenant, name="bench", scopes=["ingest", "read"], actor_label="bench")
    if limits:  # on the key and on the tenant: six limits judged per request
        for row in (key, tenant):
            type(row).objects.filter(pk=row.pk).update(**GENEROUS_LIMITS)
    wallet_topup(tenant=tenant, amount=Decimal("1000000"), reference="bench", actor_label="bench")
    quota_create(tenant=tenant, metric="tokens", window="day", limit=Decimal(10**12), actor_label="bench")
    return Fixture(tenant_id=tenant.pk, secret=secret)


def forget_redis_keys(tenant_id: int) -> int:
    """Delete this tenant's balance keys (a fresh database reuses tenant ids) and nothing else."""
    import redis  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415

    client = redis.Redis.from_url(settings.REDIS_URL)
    removed = 0
    patterns = ("bal:{t}", "qk:{t}", "hold:{t}:*", "q:{t}:*", "rl:{t}:*")
    for pattern in (p.replace("{t}", f"{{{tenant_id}}}") for p in patterns):
        keys = list(client.scan_iter(match=pattern.replace("{", "[{]").replace("}", "[}]"), count=1000))
        if keys:
            removed += client.delete(*keys)
    client.close()
    return removed


def steady_state_calls(fixtures: dict[str, Fixture]) -> dict[str, tuple[int, int]]:
    """(database queries, Redis round trips) of one check-authorize per backend, after a warm-up."""
    import redis  # noqa: PLC0415
    from django.db import connection  # noqa: PLC0415
    from django.test import Client  # noqa: PLC0415
    from django.test.utils import CaptureQueriesContext, override_settings  # noqa: PLC0415

    sent = []
    original = redis.Redis.execute_command

    def counting(self, *args, **options):
        sent.append(args[0])
        return original(self, *args, **options)

    body = json.dumps({"model": "gpt-4o", "estimated_input_tokens": 1000, "max_output_tokens": 500})
    out = {}
    redis.Redis.execute_command = counting
    try:
        for backend, fixture in fixtures.items():
            client = Client(HTTP_AUTHORIZATION=f"Bearer {fixture.secret}")
            with override_settings(BALANCE_BACKEND=backend, ALLOWED_HOSTS=["testserver"]):
                client.post(PATH, body, content_type="application/json")  # warm: seed, caches
                sent.clear()
                with CaptureQueriesContext(connection) as queries:
                    response = client.post(PATH, body, content_type="application/json")
                assert response.status_code == 200, response.content
                out[backend] = (len(queries), len(sent))
    finally:
        redis.Redis.execute_command = original
    return out


# --- Load: open loop, latency from the scheduled send time ------------------------------------------


def _client(port: int, secret: str, rate: float, start_at: float, duration: float, hold: bool, tag: str, out) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    interval = 1.0 / rate if rate > 0 else 0.0  # 0: closed loop, one request after the other
    latencies, statuses = [], {}
    n = 0
    while True:
        scheduled = start_at + n * interval if interval else time.perf_counter()
        if scheduled >= start_at + duration:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        body = {"model": "gpt-4o", "estimated_input_tokens": 1000, "max_output_tokens": 500}
        if hold:
            body.update(hold=True, request_id=f"bench-{tag}-{n}")
        try:
            conn.request("POST", PATH, json.dumps(body), headers)
            response = conn.getresponse()
            response.read()
            status = response.status
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
        except (OSError, http.client.HTTPException):
            conn.close()
            status = 0
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1
        n += 1
    out.put((latencies, statuses))


@dataclass
class Phase:
    name: str
    requests: int
    seconds: float
    p50: float
    p99: float
    worst: float
    statuses: dict[int, int]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def run_phase(
    name: str,
    server: Server,
    fixture: Fixture,
    args: argparse.Namespace,
    *,
    hold: bool,
    duration: float,
    serial: bool = False,
) -> Phase:
    """Open loop at --rate from --clients processes; or (serial) one client, closed loop."""
    queue: mp.Queue = mp.Queue()
    start_at = time.perf_counter() + 0.5
    clients = 1 if serial else args.clients
    per_client = 0.0 if serial else args.rate / args.clients
    procs = [
        mp.Process(
            target=_client,
            args=(
                server.port,
                fixture.secret,
                per_client,
                start_at + i / args.rate,
                duration,
                hold,
                f"{name}-{i}",
                queue,
            ),
        )
        for i in range(clients)
    ]
    return gather(name, procs, queue, start_at=start_at, duration=duration)


def gather(name: str, procs: list[mp.Process], queue: mp.Queue, *, start_at: float, duration: float) -> Phase:
    """Start the client processes, wait for their reports and sum them up into one phase."""
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    for _ in procs:
        lat, st = queue.get(timeout=duration + 120)
        latencies.extend(lat)
        for code, count in st.items():
            statuses[code] = statuses.get(code, 0) + count
    finished = time.perf_counter()
    for proc in procs:
        proc.join()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return Phase(name, len(latencies), finished - start_at, pct(0.50), pct(0.99), latencies[-1] * 1000, statuses)


def migrated_database(name: str) -> str:
    """Drop and recreate the benchmark's database, point Django at it and migrate; its URL."""
    maintenance_url, bench_url = database_urls(name)
    recreate_database(maintenance_url, name)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django  # noqa: PLC0415

    django.setup()
    from django.core.management import call_command  # noqa: PLC0415

    call_command("migrate", verbosity=0, interactive=False)
    return bench_url


# --- Main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.environ.get("REDIS_URL"):
        raise SystemExit("REDIS_URL must name the Redis to benchmark the redis backend on; try `make bench`.")
    began = time.monotonic()
    bench_url = migrated_database(args.database)
    from django.db import connections  # noqa: PLC0415

    # One tenant per backend: the db backend does not mirror into Redis, so they must not share.
    fixtures = {backend: create_fixture(f"bench-{backend}") for backend in ("redis", "db")}
    # The same again with rate limits on the key and the tenant (requests, tokens, parallel).
    fixtures |= {f"{b}-rl": create_fixture(f"bench-{b}-rl", limits=True) for b in ("redis", "db")}
    for fixture in fixtures.values():
        forget_redis_keys(fixture.tenant_id)
    calls = steady_state_calls(fixtures)
    connections.close_all()
    print(f"setup: {args.database} migrated and seeded in {time.monotonic() - began:.1f} s", flush=True)

    phases: list[tuple[str, Phase]] = []
    runs = [
        ("redis", "redis", {}, ("check", "hold", "serial")),
        ("db", "db", {}, ("check", "hold", "serial")),
        # Holds when their COMMIT does not wait for the WAL flush (HOLD_SYNCHRONOUS_COMMIT=0).
        ("redis-nf", "redis", {"HOLD_SYNCHRONOUS_COMMIT": "0"}, ("hold",)),
        # With six rate limits judged per request (in the same script / transaction).
        ("redis-rl", "redis", {}, ("check", "hold")),
        ("db-rl", "db", {}, ("check", "hold")),
    ]
    if args.only:
        runs = [run for run in runs if run[0] in args.only.split(",")]
    for label, backend, extra_env, modes in runs:
        fixture = fixtures.get(label, fixtures[backend])
        server = start_server(
            args,
            database_url=bench_url,
            name=f"authorize-{label}",
            env={"BALANCE_BACKEND": backend, **extra_env},
            metrics=False,
        )
        try:
            run_phase("warmup", server, fixture, args, hold=False, duration=args.warmup)
            for mode in modes:
                serial = mode == "serial"
                duration = min(5, args.duration) if serial else args.duration
                phase = run_phase(
                    f"{label}-{mode}", server, fixture, args, hold=mode == "hold", duration=duration, serial=serial
                )
                phases.append((label, phase))
                print(f"{label} {mode}: done", flush=True)
        finally:
            server.stop()

    from django.test.utils import override_settings  # noqa: PLC0415

    from billing.models import Wallet  # noqa: PLC0415
    from billing.selectors import ledger_sum  # noqa: PLC0415
    from billing.services.reconcile import balances_reconcile  # noqa: PLC0415

    books = all(
        Wallet.objects.get(tenant_id=f.tenant_id).balance == ledger_sum(tenant_id=f.tenant_id)
        for f in fixtures.values()
    )
    with override_settings(BALANCE_BACKEND="redis"):
        reports = [balances_reconcile(tenant_id=fixtures[f].tenant_id, fix=False) for f in ("redis", "redis-rl")]
    report = next((r for r in reports if not r.clean), reports[0])

    print()
    print(
        f"authorize at {args.rate:.0f} req/s offered, {args.duration:.0f} s per phase, "
        f"{args.workers} gunicorn {args.worker_class} workers x {args.threads} thread(s) per server, "
        f"{args.clients} client processes, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"steady-state calls per check: redis backend {calls['redis'][0]} DB query + {calls['redis'][1]} Redis call; "
        f"db backend {calls['db'][0]} DB queries + {calls['db'][1]} Redis calls"
    )
    print("modes: check = hold false, hold = a new hold each, both open loop at the offered rate; serial = one")
    print("client, closed loop (service time without queueing); redis-nf = holds with HOLD_SYNCHRONOUS_COMMIT=0;")
    print("-rl = with rate limits (requests, tokens, parallel) on the key and the tenant, never reached")
    print(f"{'backend':8} {'mode':6} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  statuses")
    for backend, phase in phases:
        mode = phase.name.rsplit("-", 1)[1]
        codes = ", ".join(f"{code}: {count}" for code, count in sorted(phase.statuses.items()))
        print(
            f"{backend:8} {mode:6} {phase.requests:8d} {phase.throughput:8.1f} {phase.p50:8.2f} "
            f"{phase.p99:8.2f} {phase.worst:8.2f}  {codes}"
        )
    for label in ("redis", "redis-rl"):
        checks = [p for b, p in phases if b == label and p.name.endswith("-check")]
        if not checks:
            continue
        floor = "met" if all(p.p99 < 20 for p in checks) else "MISSED"
        goal = "met" if all(p.p99 < 5 for p in checks) else "not met"
        print(f"checks on {label} at the offered rate: floor p99 < 20 ms {floor}, goal p99 < 5 ms {goal}")
    print(
        f"checks: wallet == sum(ledger): {'ok' if books else 'FAILED'}; "
        f"Redis == PostgreSQL: {'ok' if report.clean else f'FAILED {report.drifts}'}"
    )
    errors = sum(count for _, p in phases for code, count in p.statuses.items() if code != 200)
    return 0 if books and report.clean and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
