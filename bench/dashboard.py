"""Dashboard benchmark: render the tenant dashboard server-side with 1M usage events stored.

1. drops and recreates its own database (`--database`, default tb_portal_bench) on the server
   DATABASE_URL names, migrates it and creates the monthly partitions of the usage table that
   the events span (as beat would have; otherwise most would land in the default partition);
2. creates the measured tenant (Asia/Shanghai, 20 API keys, 8 models, quotas, a wallet) and a
   few other tenants, and loads `--events` events for the measured tenant spread over the last
   `--days` days (plus `--other-events` for the others) with INSERT ... SELECT generate_series
   (foreign-key triggers off and secondary indexes dropped while loading, then rebuilt), then
   VACUUM ANALYZE;
3. builds the DailyUsage rollups with the rollup service and checks they add up to the events;
4. renders the dashboard through Django's test client, `--runs` times per range (7, 30 and 90
   days, after warm-up runs), plus the usage explorer's first page, and prints median and p95.

Run with `make bench` or directly:
    DEBUG=0 SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/dashboard.py --events 1000000
Floor: < 1 s per dashboard render; goal: < 200 ms (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import conninfo, database_exists, database_urls, drop_secondary_indexes, recreate_database  # noqa: E402 - bench/ is on sys.path

MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "o3-mini",
    "claude-sonnet-4-5",
    "gemini-2.5-pro",
    "qwen-max",
    "local-llama",
)
# Price per 1M input / output tokens, per model above (only to give the events a cost).
RATES = ((2.5, 10), (0.15, 0.6), (2, 8), (1.1, 4.4), (3, 15), (1.25, 10), (1.6, 6.4), (0, 0))
TENANT_SLUG = "bench"
OWNER = "owner@bench.test"
CHUNK = 500_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the measured tenant (1,000,000)")
    parser.add_argument("--other-events", type=int, default=200_000, help="events of the other tenants (200,000)")
    parser.add_argument("--days", type=int, default=90, help="days the events span, ending now (90)")
    parser.add_argument("--keys", type=int, default=20, help="API keys of the measured tenant (20)")
    parser.add_argument("--runs", type=int, default=20, help="timed renders per page (20)")
    parser.add_argument("--database", default="tb_portal_bench", help="dropped and recreated (tb_portal_bench)")
    parser.add_argument("--reuse", action="store_true", help="keep the database if it already holds the events")
    args = parser.parse_args()
    if min(args.events, args.days, args.keys, args.runs) < 1 or args.other_events < 0:
        parser.error("--events, --days, --keys and --runs must be positive, --other-events not negative")
    return args


def prepare_database(args: argparse.Namespace) -> bool:
    """Point DATABASE_URL at the bench database; True when an existing one is reused as it is."""
    import psycopg  # noqa: PLC0415

    maintenance_url, bench_url = database_urls(args.database)
    os.environ["DATABASE_URL"] = bench_url
    if args.reuse and database_exists(maintenance_url, args.database):
        with psycopg.connect(conninfo(bench_url)) as bench:
            try:
                (count,) = bench.execute("SELECT count(*) FROM metering_usageevent").fetchone()
            except psycopg.errors.UndefinedTable:
                count = None
        if count == args.events + args.other_events:
            return True
    recreate_database(maintenance_url, args.database)
    return False


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["ALLOWED_HOSTS"] = "testserver"
    import django  # noqa: PLC0415

    django.setup()


def create_tenants(args: argparse.Namespace) -> None:
    from decimal import Decimal  # noqa: PLC0415

    from django.core.management import call_command  # noqa: PLC0415
    from django.utils import timezone  # noqa: PLC0415

    from accounts import services  # noqa: PLC0415
    from billing.services.ledger import ledger_post  # noqa: PLC0415
    from billing.services.quotas import quota_create  # noqa: PLC0415
    from metering import partitions  # noqa: PLC0415

    call_command("migrate", verbosity=0, skip_checks=True)
    # The months the events span, as beat would have created them (not the default partition).
    partitions.partitions_ensure(now=timezone.now(), max_past_days=args.days + 1, ahead=1, skip=set())
    tenant = services.tenant_create(name="Bench Inc.", slug=TENANT_SLUG, timezone_name="Asia/Shanghai")
    services.user_create(email=OWNER, password="bench-only-password", tenant=tenant, role="owner")
    keys = [services.api_key_create(tenant=tenant, name=f"service {n:02d}")[0] for n in range(args.keys)]
    ledger_post(
        tenant_id=tenant.pk,
        currency="USD",
        kind="topup",
        amount=Decimal(100_000),
        idempotency_key="bench",
    )
    quota_create(tenant=tenant, metric="tokens", window="month", limit=Decimal(2_000_000_000))
    quota_create(tenant=tenant, metric="money", window="day", limit=Decimal(500))
    quota_create(tenant=tenant, api_key=keys[0], metric="tokens", window="lifetime", limit=Decimal(500_000_000))
    for n in range(4):
        other = services.tenant_create(name=f"Other {n}", slug=f"other-{n}", timezone_name="UTC")
        services.api_key_create(tenant=other, name="main")


def load_events(args: argparse.Namespace) -> None:
    from django.db import connection  # noqa: PLC0415

    from accounts.models import ApiKey  # noqa: PLC0415

    keys = list(ApiKey.objects.order_by("id").values_list("tenant__slug", "tenant_id", "id"))
    main = [(tenant_id, key_id) for slug, tenant_id, key_id in keys if slug == TENANT_SLUG]
    others = [(tenant_id, key_id) for slug, tenant_id, key_id in keys if slug != TENANT_SLUG]
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE bench_keys (grp int, idx int, tenant_id bigint, key_id bigint)")
        cursor.executemany(
            "INSERT INTO bench_keys VALUES (%s, %s, %s, %s)",
            [(0, i, t, k) for i, (t, k) in enumerate(main)] + [(1, i, t, k) for i, (t, k) in enumerate(others)],
        )
        cursor.execute(
            "CREATE TEMP TABLE bench_models (idx int PRIMARY KEY, model text, rate_in numeric, rate_out numeric)"
        )
        cursor.executemany(
            "INSERT INTO bench_models VALUES (%s, %s, %s, %s)",
            [(i, model, RATES[i][0], RATES[i][1]) for i, model in enumerate(MODELS)],
        )
        cursor.execute("SET session_replication_role = replica")  # no FK triggers while loading
        rebuild = drop_secondary_indexes(cursor)
        span_ms = args.days * 86_400_000
        for group, count, key_count in ((0, args.events, len(main)), (1, args.other_events, len(others))):
            for first in range(0, count, CHUNK):
                last = min(first + CHUNK, count) - 1
                cursor.execute(
                    """
                    INSERT INTO metering_usageevent (tenant_id, api_key_id, request_id, model, input_tokens,
                        output_tokens, cached_input_tokens, cache_write_tokens, occurred_at, received_at,
                        latency_ms, metadata, token_source, encoding, cost, currency, price_id, body_hash)
                    SELECT k.tenant_id, k.key_id, 'bench-' || %s || '-' || i, m.model, t.inp, t.outp, t.inp / 5, 0,
                        t.at, t.at + interval '1 second', 150 + i %% 1800, '{}'::jsonb, 'reported', '',
                        (t.inp * m.rate_in + t.outp * m.rate_out) / 1000000, 'USD', NULL, md5(%s || '-' || i)
                    FROM generate_series(%s::bigint, %s::bigint) i
                    JOIN bench_keys k ON k.grp = %s AND k.idx = (i * 7) %% %s
                    JOIN bench_models m ON m.idx = (i * 13 / 5) %% %s
                    CROSS JOIN LATERAL (SELECT
                        200 + (i * 7919) %% 3800 AS inp,
                        20 + (i * 104729) %% 1200 AS outp,
                        now() - ((i * 48271) %% %s) * interval '1 millisecond' AS at) t
                    """,
                    [group, group, first, last, group, key_count, len(MODELS), span_ms],
                )
                print(f"  loaded {last + 1:>11,} events of group {group} ({time.perf_counter() - started:6.1f} s)")
        cursor.execute("SET session_replication_role = origin")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for statement in rebuild:
            cursor.execute(statement)
        cursor.execute("VACUUM ANALYZE metering_usageevent")
    print(f"  load + indexes + analyze: {time.perf_counter() - started:.1f} s")


def build_rollups() -> None:
    from django.db import connection  # noqa: PLC0415

    from accounts.models import Tenant  # noqa: PLC0415
    from metering.services.rollup import rollup_tenant  # noqa: PLC0415

    started = time.perf_counter()
    for tenant_id in Tenant.objects.values_list("pk", flat=True):
        rollup_tenant(tenant_id=tenant_id)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE metering_dailyusage")
        cursor.execute(
            """
            SELECT count(*) FROM (
                SELECT tenant_id, count(*), sum(input_tokens), sum(output_tokens), sum(cost)
                FROM metering_usageevent GROUP BY tenant_id
                EXCEPT
                SELECT tenant_id, sum(requests), sum(input_tokens), sum(output_tokens), sum(cost)
                FROM metering_dailyusage GROUP BY tenant_id
            ) mismatch
            """
        )
        (mismatched,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM metering_dailyusage")
        (rows,) = cursor.fetchone()
    if mismatched:
        sys.exit(f"FAILED: {mismatched} tenants whose DailyUsage does not add up to their events")
    print(f"  rollups: {rows:,} DailyUsage rows in {time.perf_counter() - started:.1f} s (sums checked)")


def measure(args: argparse.Namespace) -> list[tuple[str, float, float, float, int]]:
    from django.contrib.auth import get_user_model  # noqa: PLC0415
    from django.db import connection  # noqa: PLC0415
    from django.test import Client  # noqa: PLC0415
    from django.test.utils import override_settings  # noqa: PLC0415

    plain_static = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    client = Client()
    client.force_login(get_user_model().objects.get(username=OWNER))
    pages = [
        ("dashboard, 7 days", f"/t/{TENANT_SLUG}/?range=7"),
        ("dashboard, 30 days", f"/t/{TENANT_SLUG}/?range=30"),
        ("dashboard, 90 days", f"/t/{TENANT_SLUG}/?range=90"),
        ("usage explorer, first page", f"/t/{TENANT_SLUG}/usage/?range=30"),
    ]
    results = []
    with override_settings(STORAGES=plain_static):  # no manifest needed: rendering, not serving
        for label, url in pages:
            for _ in range(3):
                response = client.get(url)
                assert response.status_code == 200, (url, response.status_code)
            executed: list[str] = []

            def count(execute, sql, params, many, context, executed=executed):
                executed.append(sql)
                return execute(sql, params, many, context)

            with connection.execute_wrapper(count):
                client.get(url)
            timings = []
            for _ in range(args.runs):
                started = time.perf_counter()
                response = client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            timings.sort()
            p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
            results.append((label, statistics.median(timings), p95, timings[-1], len(executed)))
    return results


def main() -> None:
    args = parse_args()
    reused = prepare_database(args)
    setup_django()
    if reused:
        print(f"Reusing {args.database} ({args.events + args.other_events:,} events).")
    else:
        print(f"Loading {args.events:,} events over {args.days} days (+{args.other_events:,} for other tenants)")
        create_tenants(args)
        load_events(args)
        build_rollups()
    results = measure(args)
    print()
    print(f"Server-side render through Django's test client, {args.runs} runs each (ms):")
    print(f"  {'page':<28} {'median':>8} {'p95':>8} {'max':>8} {'queries':>8}")
    for label, median, p95, worst, queries in results:
        print(f"  {label:<28} {median:8.1f} {p95:8.1f} {worst:8.1f} {queries:8d}")
    worst_p95 = max(p95 for label, _m, p95, _w, _q in results if label.startswith("dashboard"))
    verdict = "goal met" if worst_p95 < 200 else ("floor met" if worst_p95 < 1000 else "FLOOR MISSED")
    print(f"Dashboard p95 (worst range): {worst_p95:.1f} ms -> {verdict} (floor < 1000 ms, goal < 200 ms)")


if __name__ == "__main__":
    main()
