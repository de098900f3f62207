"""Daily rollup benchmark: rebuild DailyUsage from N synthetic events on PostgreSQL.

1. drops and recreates its own database (`--database`, default tb_rollup_bench) on the server
   DATABASE_URL names, migrates it and creates the day's monthly partition of the usage table
   (as beat would have; otherwise the events would land in the default partition);
2. creates tenants in several time zones (UTC, Asia/Shanghai, America/New_York, Asia/Kolkata
   with its half-hour offset), API keys and models;
3. generates N events inside one local day of each tenant, in time order, with INSERT ...
   SELECT generate_series (foreign-key triggers off and secondary indexes dropped while
   loading, then rebuilt: every index is in place when the rollup runs), then VACUUM ANALYZE;
4. times, on the same data:
   - the daily rollup of that day for all tenants (one INSERT ... SELECT ... GROUP BY ...
     ON CONFLICT DO UPDATE statement), first build;
   - the same rollup again (nothing changed: identical rows, nothing rewritten);
   - the incremental refresh (finds the tenant-days by received_at, one statement per tenant-day);
   - a late event folded in by the incremental refresh;
5. checks sum(DailyUsage) == sum(UsageEvent) per tenant and prints a table.

Run with `make bench` or directly:
    DEBUG=0 SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/rollup.py --events 1000000
Floor: 10M events in < 120 s; goal: < 20 s (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import conninfo, database_exists, database_urls, drop_secondary_indexes, recreate_database  # noqa: E402 - bench/ is on sys.path

ZONES = ("UTC", "Asia/Shanghai", "America/New_York", "Asia/Kolkata")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "o3-mini", "gemini-2.5-pro", "local-llama")
DAY = dt.date(2026, 3, 10)
CHUNK = 1_000_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="synthetic events (default 1,000,000)")
    parser.add_argument("--tenants", type=int, default=40)
    parser.add_argument("--keys", type=int, default=5, help="API keys per tenant")
    parser.add_argument("--database", default="tb_rollup_bench", help="dropped and recreated")
    parser.add_argument("--reuse", action="store_true", help="keep the database if it already holds --events events")
    args = parser.parse_args()
    if args.events < 1 or args.tenants < 1 or args.keys < 1:
        parser.error("--events, --tenants and --keys must be positive")
    return args


def prepare_database(args: argparse.Namespace) -> bool:
    """Returns True when an existing database with the same number of events is reused."""
    import psycopg  # noqa: PLC0415

    maintenance_url, bench_url = database_urls(args.database)
    os.environ["DATABASE_URL"] = bench_url
    if args.reuse and database_exists(maintenance_url, args.database):
        with psycopg.connect(conninfo(bench_url)) as bench:
            try:
                bench.execute("DELETE FROM metering_usageevent WHERE request_id NOT LIKE 'bench-%%'")
                (count,) = bench.execute("SELECT count(*) FROM metering_usageevent").fetchone()
            except psycopg.errors.UndefinedTable:
                count = None
        if count == args.events:
            return True
    recreate_database(maintenance_url, args.database)
    return False


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django  # noqa: PLC0415

    django.setup()


def load(args: argparse.Namespace) -> None:
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connection  # noqa: PLC0415

    from accounts.models import ApiKey, Tenant  # noqa: PLC0415
    from billing.periods import day_period  # noqa: PLC0415
    from metering import partitions  # noqa: PLC0415

    call_command("migrate", verbosity=0, skip_checks=True)
    partitions.partition_create(month=DAY.replace(day=1))  # as beat would have: the day's month, not the default
    tenants = Tenant.objects.bulk_create(
        Tenant(name=f"Bench {i}", slug=f"bench-{i}", timezone=ZONES[i % len(ZONES)]) for i in range(args.tenants)
    )
    keys = ApiKey.objects.bulk_create(
        ApiKey(tenant=tenant, name=f"k{j}", prefix=f"b{tenant.pk:05d}{j:04d}", secret_hash="0" * 64, scopes=["ingest"])
        for tenant in tenants
        for j in range(args.keys)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE bench_keys (idx int PRIMARY KEY, tenant_id bigint, key_id bigint, start timestamptz)"
        )
        cursor.executemany(
            "INSERT INTO bench_keys VALUES (%s, %s, %s, %s)",
            [(idx, key.tenant_id, key.pk, day_period(DAY, key.tenant.timezone).start) for idx, key in enumerate(keys)],
        )
        cursor.execute("CREATE TEMP TABLE bench_models (idx int PRIMARY KEY, model text)")
        cursor.executemany("INSERT INTO bench_models VALUES (%s, %s)", list(enumerate(MODELS)))
        cursor.execute("SET session_replication_role = replica")  # no FK triggers while loading
        started = time.perf_counter()
        rebuild = drop_secondary_indexes(cursor)
        for first in range(0, args.events, CHUNK):
            last = min(first + CHUNK, args.events) - 1
            cursor.execute(
                """
                INSERT INTO metering_usageevent (tenant_id, api_key_id, request_id, model, input_tokens,
                    output_tokens, cached_input_tokens, cache_write_tokens, occurred_at, received_at,
                    latency_ms, metadata, token_source, encoding, cost, currency, price_id, body_hash)
                SELECT k.tenant_id, k.key_id, 'bench-' || i, m.model, 200 + (i * 7919) %% 4000,
                    20 + (i * 104729) %% 900, (i * 31) %% 150, 0, t.at, t.at + interval '2 seconds',
                    100 + i %% 900, '{}'::jsonb, 'reported', '',
                    CASE WHEN i %% 97 = 0 THEN NULL
                         ELSE ((200 + (i * 7919) %% 4000) * 2.5 + (20 + (i * 104729) %% 900) * 10) / 1000000.0 END,
                    'USD', NULL, lpad(to_hex(i), 64, '0')
                FROM generate_series(%s::bigint, %s::bigint) i
                JOIN bench_keys k ON k.idx = i %% %s
                JOIN bench_models m ON m.idx = (i / %s) %% %s
                CROSS JOIN LATERAL (SELECT k.start + (i * 86400000 / %s) * interval '1 millisecond' AS at) t
                """,
                [first, last, len(keys), len(keys), len(MODELS), args.events],
            )
            print(f"  loaded {last + 1:>11,} events ({time.perf_counter() - started:6.1f} s)", flush=True)
        cursor.execute("SET session_replication_role = origin")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for statement in rebuild:
            cursor.execute(statement)
        print(f"  indexes rebuilt ({time.perf_counter() - started:6.1f} s)", flush=True)
        cursor.execute("VACUUM ANALYZE metering_usageevent")  # as autovacuum would have, hint bits set
    print(f"  load + analyze: {time.perf_counter() - started:.1f} s", flush=True)


def check_sums() -> None:
    from django.db import connection  # noqa: PLC0415

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM (
                SELECT tenant_id, count(*) AS requests, sum(input_tokens) AS i, sum(output_tokens) AS o,
                       coalesce(sum(cost), 0) AS c, count(*) - count(cost) AS u
                FROM metering_usageevent GROUP BY tenant_id
                EXCEPT
                SELECT tenant_id, sum(requests), sum(input_tokens), sum(output_tokens), sum(cost),
                       sum(unpriced_requests)
                FROM metering_dailyusage GROUP BY tenant_id
            ) mismatch
            """
        )
        (mismatched,) = cursor.fetchone()
    if mismatched:
        sys.exit(f"FAILED: {mismatched} tenants whose DailyUsage does not add up to their events")
    print("  check: sum(DailyUsage) == sum(UsageEvent) for every tenant")


def rows_snapshot() -> list[tuple]:
    from metering.models import DailyUsage  # noqa: PLC0415

    return list(
        DailyUsage.objects.order_by("tenant_id", "api_key_id", "model", "day").values_list(
            "id", "tenant_id", "api_key_id", "model", "day", "requests", "input_tokens", "output_tokens", "cost",
            "unpriced_requests", "updated_at",
        )
    )  # fmt: skip


def main() -> None:
    args = parse_args()
    reused = prepare_database(args)
    setup_django()
    from django.db import connection  # noqa: PLC0415
    from django.utils import timezone  # noqa: PLC0415

    from accounts.models import ApiKey  # noqa: PLC0415
    from metering.models import DailyUsage, RollupCursor, UsageEvent  # noqa: PLC0415
    from metering.services import rollup  # noqa: PLC0415

    print(f"rollup bench: {args.events:,} events, {args.tenants} tenants x {args.keys} keys x {len(MODELS)} models")
    if reused:
        print("  reusing the loaded database")
        DailyUsage.objects.all().delete()
        RollupCursor.objects.all().delete()
    else:
        load(args)
    figures = []

    # 1. The daily rollup: all tenants' local day, one statement.
    started = time.perf_counter()
    first = rollup.rollup_day(day=DAY)
    figures.append(("daily rollup, all tenants (first build)", time.perf_counter() - started, first.groups))
    check_sums()
    before = rows_snapshot()

    # 2. Again, nothing changed: identical rows, none rewritten.
    started = time.perf_counter()
    again = rollup.rollup_day(day=DAY)
    figures.append(("same day again (no change)", time.perf_counter() - started, again.written))
    assert rows_snapshot() == before, "a second rollup changed rows"

    # 3. Incremental refresh from scratch: days found by received_at, one statement per tenant-day.
    RollupCursor.objects.all().delete()
    DailyUsage.objects.all().delete()
    started = time.perf_counter()
    refreshed = rollup.rollup_refresh()
    figures.append(("incremental refresh from empty (per tenant-day)", time.perf_counter() - started, len(refreshed)))
    check_sums()

    # 4. A late event for yesterday's day arrives; the next refresh folds it in.
    key = ApiKey.objects.select_related("tenant").first()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO metering_usageevent (tenant_id, api_key_id, request_id, model, input_tokens, output_tokens,"
            " cached_input_tokens, cache_write_tokens, occurred_at, received_at, metadata, token_source, encoding,"
            " cost, currency, body_hash) VALUES (%s, %s, 'late-1', 'gpt-4o', 10, 10, 0, 0, %s, %s, '{}', 'reported',"
            " '', 0.000125, 'USD', 'late')",
            [key.tenant_id, key.pk, rollup.day_period(DAY, key.tenant.timezone).start, timezone.now()],
        )
    started = time.perf_counter()
    late = rollup.rollup_refresh()
    figures.append(("late event folded in (incremental)", time.perf_counter() - started, len(late)))
    check_sums()

    total = UsageEvent.objects.count()
    print()
    print(f"{'figure':<52} {'seconds':>9} {'rows/days':>10}")
    for name, seconds, count in figures:
        print(f"{name:<52} {seconds:>9.2f} {count:>10,}")
    rate = total / figures[0][1]
    print(f"\nrollup rate: {rate:,.0f} events/s ({total:,} events); floor 10M < 120 s, goal 10M < 20 s")


if __name__ == "__main__":
    main()
