"""Partitions and archival benchmark: paired ingest, archiving a big month, restoring it.

Prints figures; asserts nothing (docs/scaling.md, "Monthly partitions and archival", explains
them). In a database of its own (`--database`, default tokenbill_bench_archive) on the server
DATABASE_URL names:

1. migrates it (the usage table is partitioned) and generates `--events` (default 10M; 100M
   with --long) usage events of one old month with generate_series (not the ORM), spread over
   `--tenants` tenants, with realistic entropy (random request ids, SHA-256 body hashes);
2. paired ingest: the event store's statement (claim the key in UsageRequest, insert into the
   partitioned table) against the statement it replaced (INSERT ... ON CONFLICT (tenant_id,
   request_id) on an unpartitioned twin with the old unique index, which gets a copy of the
   generated month: both sides hold the same history), both prefilled with `--prefill` rows,
   1,000-event batches, alternating which goes first each round; then the same pair end to
   end through the ingest service (usage_record_batch: parsing, rating, the insert, the charge
   and the counters), the old statement put in the event store's place; with `--events 0`
   only this;
3. archives the month (export, verify, drop: metering.services.archive) and reports seconds,
   bytes of the file against bytes of the partition with its indexes;
4. restores it into the side table and reports seconds.

Generating 10M events takes minutes; with `--reuse` the generated database is kept as a template
(`<database>_template`, marked with the events and tenants it holds) and each later run with the
same figures starts from a file copy of it (`CREATE DATABASE ... TEMPLATE`, seconds).

    DEBUG=0 SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/archive.py --events 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from benchdb import conninfo, database_urls, recreate_database  # noqa: E402 - bench/ is on sys.path

MONTH = dt.date(2024, 3, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="tokenbill_bench_archive")
    parser.add_argument("--events", type=int, default=10_000_000, help="events in the archived month (0: ingest only)")
    parser.add_argument(
        "--long",
        action="store_true",
        help="100M events (a long run; with --skip-ingest unless the disk holds two copies)",
    )
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--prefill", type=int, default=1_000_000, help="rows in each ingest table before timing")
    parser.add_argument("--rounds", type=int, default=8, help="paired ingest rounds")
    parser.add_argument("--batches", type=int, default=20, help="1,000-event batches per variant and round")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="keep the generated month as a template for later runs")
    args = parser.parse_args()
    events = 100_000_000 if args.long else args.events

    maintenance, url = database_urls(args.database)
    template = f"{args.database}_template"
    mark = f"{events} events, {args.tenants} tenants"
    reused = args.reuse and template_mark(maintenance, template) == mark
    if reused:
        started = time.monotonic()
        copy_database(maintenance, template, args.database)
        print(f"reused {template} ({mark}): copied in {time.monotonic() - started:.1f} s")
    else:
        recreate_database(maintenance, args.database)
    archive_dir = tempfile.mkdtemp(prefix="tokenbill-archive-bench-")
    os.environ.update({"DATABASE_URL": url, "ARCHIVE_DIR": archive_dir})
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("DEBUG", "0")
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], check=True, cwd=ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django  # noqa: PLC0415 - after django.setup()

    django.setup()
    from django.conf import settings  # noqa: PLC0415 - after django.setup()
    from django.db import connection  # noqa: PLC0415 - after django.setup()

    print(f"machine: {os.cpu_count()} cores, shared; PostgreSQL {connection.cursor().connection.info.server_version}")
    print(f"archive directory {archive_dir} (gzip level {settings.ARCHIVE_GZIP_LEVEL} if not Parquet)")
    if not reused and events:
        generate(connection, events, args.tenants)
        if args.reuse:
            connection.close()  # a template database must have no connection
            copy_database(maintenance, args.database, template)
            with psycopg.connect(conninfo(maintenance), autocommit=True) as conn:
                conn.execute(f"COMMENT ON DATABASE \"{template}\" IS '{mark}'")
    if not args.skip_ingest:
        paired_ingest(connection, args)
    if events:
        archive_and_restore(connection)


def template_mark(maintenance: str, template: str) -> str | None:
    """What the template database holds (its comment), None when there is none."""
    with psycopg.connect(conninfo(maintenance), autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [template]
        ).fetchone()
    return row[0] if row else None


def copy_database(maintenance: str, source: str, target: str) -> None:
    """target := a copy of source, file by file (no WAL for every page: seconds, not minutes)."""
    with psycopg.connect(conninfo(maintenance), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}" STRATEGY FILE_COPY')


def generate(connection, events: int, tenants: int) -> None:
    from metering import partitions  # noqa: PLC0415 - after django.setup()

    partitions.partition_create(month=MONTH)
    name = partitions.partition_name(MONTH)
    started = time.monotonic()
    chunk = 1_000_000
    seconds = (dt.datetime(2024, 4, 1) - dt.datetime(2024, 3, 1)).total_seconds()
    with connection.cursor() as cursor:
        for low in range(0, events, chunk):
            high = min(events, low + chunk)
            cursor.execute(
                f"""
                INSERT INTO metering_usageevent (tenant_id, api_key_id, request_id, model, input_tokens,
                    output_tokens, cached_input_tokens, cache_write_tokens, occurred_at, received_at, latency_ms,
                    metadata, token_source, encoding, cost, currency, price_id, body_hash, flags, long_context)
                SELECT 1 + g % {tenants}, 1000 + g % ({tenants} * 3), md5(g::text || 'r'),
                    (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4-5', 'o3-mini'])[1 + g % 4],
                    500 + (g * 7919) % 20000, 20 + (g * 104729) % 2000, ((g * 31) % 500), 0,
                    timestamptz '2024-03-01' + ((g - 1)::float8 / {events} * {seconds}) * interval '1 second',
                    timestamptz '2024-03-01' + ((g - 1)::float8 / {events} * {seconds} + 2) * interval '1 second',
                    200 + g % 3000, '{{}}'::jsonb, 'reported', '',
                    CASE WHEN g % 1000 = 0 THEN NULL ELSE ((500 + (g * 7919) % 20000) * 0.0000025) END,
                    'USD', CASE WHEN g % 1000 = 0 THEN NULL ELSE 1 + g % 4 END,
                    encode(sha256(g::text::bytea), 'hex'), '', false
                FROM generate_series({low + 1}::bigint, {high}) g
                """
            )
            print(f"  generated {high:,} / {events:,} events ({time.monotonic() - started:.0f} s)", flush=True)
        # Every stored event has its key (ingest writes both): the archive leaves the body hash to it.
        cursor.execute(
            "INSERT INTO metering_usagerequest (tenant_id, request_id, event_id, body_hash) "
            f"SELECT tenant_id, request_id, id, body_hash FROM {name}"
        )
        cursor.execute(f"VACUUM ANALYZE {name}")
        cursor.execute("VACUUM ANALYZE metering_usagerequest")
    print(f"generate: {events:,} events in {time.monotonic() - started:.1f} s")


def paired_ingest(connection, args) -> None:
    """The event store's statement on the partitioned table vs the old one on a plain table."""
    from metering.services import event_store  # noqa: PLC0415 - after django.setup()
    from metering.services.event_store import NewEvent  # noqa: PLC0415 - after django.setup()

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_flat (LIKE metering_usageevent INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        # Ids from the usage table's sequence, as the event store draws them: one id space for both
        # sides (the ledger's idempotency keys name events by id).
        cursor.execute("ALTER TABLE bench_flat ALTER COLUMN id SET DEFAULT nextval('metering_usageevent_id_seq')")
        cursor.execute("ALTER TABLE bench_flat ADD PRIMARY KEY (id)")
        cursor.execute("ALTER TABLE bench_flat ADD CONSTRAINT bench_flat_unique UNIQUE (tenant_id, request_id)")
        cursor.execute("CREATE INDEX ON bench_flat (tenant_id, occurred_at)")
        cursor.execute("CREATE INDEX ON bench_flat (tenant_id, model) WHERE cost IS NULL")
        cursor.execute("CREATE INDEX ON bench_flat (api_key_id)")
        cursor.execute("CREATE INDEX ON bench_flat (price_id)")
        cursor.execute("CREATE INDEX ON bench_flat USING brin (occurred_at)")
        cursor.execute("CREATE INDEX ON bench_flat USING brin (received_at)")
        # The same history on both sides: the generated month's events go into the twin too (in
        # the partitioned design they sit in their month and their keys in the key table).
        cursor.execute("INSERT INTO bench_flat SELECT * FROM metering_usageevent")
    record = ", ".join(
        f"{name} {pg_type}" for name, pg_type in zip(event_store.COLUMNS, event_store._PG_TYPES, strict=True)
    )
    cols = ", ".join(event_store.COLUMNS)
    old_sql = (
        f"INSERT INTO bench_flat ({cols}) SELECT {cols} FROM json_to_recordset(%s::json) AS r({record}) "
        "ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING id, request_id"
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def batch(tenant: int) -> list[NewEvent]:
        return [
            NewEvent(
                tenant_id=tenant, api_key_id=7, request_id=uuid.uuid4().hex, model="gpt-4o", input_tokens=1200,
                output_tokens=300, cached_input_tokens=0, cache_write_tokens=0, occurred_at=now, received_at=now,
                latency_ms=800, metadata={}, token_source="reported", encoding="", cost=Decimal("0.006"),
                currency="USD", price_id=1, body_hash=uuid.uuid4().hex * 2,
            )
            for _ in range(1000)
        ]  # fmt: skip

    import orjson  # noqa: PLC0415 - after django.setup()

    from infra.db import hot_cursor  # noqa: PLC0415 - after django.setup()

    def run_new(batches):
        from django.db import transaction  # noqa: PLC0415 - after django.setup()

        started = time.perf_counter()
        for events in batches:
            with transaction.atomic():
                event_store.insert_new(events)
        return len(batches) * 1000 / (time.perf_counter() - started)

    def run_old(batches):
        from django.db import transaction  # noqa: PLC0415 - after django.setup()

        started = time.perf_counter()
        for events in batches:
            rows = orjson.dumps([e.record() for e in sorted(events, key=lambda e: e.request_id)]).decode()
            with transaction.atomic(), hot_cursor() as cursor:  # server-side binding, as the event store
                cursor.execute(old_sql, [rows])
                cursor.fetchall()
        return len(batches) * 1000 / (time.perf_counter() - started)

    print(f"prefill: {args.prefill:,} rows in each ingest table ...", flush=True)
    fill = [batch(1 + n % 50) for n in range(args.prefill // 1000)]
    run_new(fill)
    run_old(fill)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE bench_flat")
        cursor.execute("VACUUM ANALYZE metering_usageevent")
        cursor.execute("VACUUM ANALYZE metering_usagerequest")
    ratios = []
    for round_no in range(args.rounds):
        work = [batch(1 + n % 50) for n in range(args.batches)]
        twin = [list(events) for events in work]
        if round_no % 2:
            old = run_old(twin)
            new = run_new(work)
        else:
            new = run_new(work)
            old = run_old(twin)
        ratios.append(new / old)
        print(f"  round {round_no + 1}: partitioned + key table {new:,.0f} ev/s, unpartitioned {old:,.0f} ev/s, "
              f"ratio {new / old:.3f}; load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    print(
        f"ingest (paired, {args.rounds} rounds): median ratio {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
    )
    paired_service(connection, args, f"INSERT INTO bench_flat ({cols})")


def paired_service(connection, args, old_insert: str) -> None:
    """The ingest service end to end (parse, keyed body hashes, rating twice, the insert, the
    charge, the quota and balance counters), the real event store against the statement it
    replaced, on the tables prefilled above; 1,000-event batches of one tenant, alternating."""
    import orjson  # noqa: PLC0415 - after django.setup()
    from ingest import create_fixture, make_events, now_iso  # noqa: PLC0415 - bench/ingest.py

    from accounts.models import ApiKey  # noqa: PLC0415 - after django.setup()
    from billing.services.holds import CLAIMED_COLUMN_TYPES, claim_settled_statement, claimed_holds  # noqa: PLC0415
    from infra.db import hot_cursor  # noqa: PLC0415 - after django.setup()
    from metering.services import event_store  # noqa: PLC0415 - after django.setup()
    from metering.services import ingest as ingest_service  # noqa: PLC0415 - after django.setup()

    record = ", ".join(f"{n} {t}" for n, t in zip(event_store.COLUMNS, event_store._PG_TYPES, strict=True))
    insert = (
        f"{old_insert} SELECT {', '.join(event_store.COLUMNS)} FROM json_to_recordset(%s::json) AS r({record}) "
        "{gate}ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING id, request_id"
    )
    nulls = ", ".join(f"NULL::{pg_type}" for pg_type in CLAIMED_COLUMN_TYPES[2:])

    def flat_insert_new(events, *, settle_holds_at=None, lock=None):
        """event_store.insert_new as it was before partitions (one INSERT ... ON CONFLICT)."""
        events = sorted(events, key=lambda event: event.request_id)
        rows = orjson.dumps([event.record() for event in events]).decode()
        ctes, params, gate = [], [], ""
        if lock is not None:
            ctes, params, gate = [f"lk AS ({lock[0]})"], list(lock[1]), event_store._GATE
        costs = {event.request_id: event.cost for event in events}
        claim, claim_params = claim_settled_statement(
            tenant_id=events[0].tenant_id, costs=costs, now=settle_holds_at, among="ins"
        )
        sql = (
            "WITH " + "".join(f"{cte}, " for cte in ctes) + f"ins AS ({insert.format(gate=gate)}), "
            f"claimed AS ({claim}) SELECT 'e', id, request_id, {nulls} FROM ins UNION ALL SELECT 'h', * FROM claimed"
        )
        with hot_cursor() as cursor:  # server-side binding and prepared statements, as it had
            cursor.execute(sql, [*params, rows, *claim_params])
            result = cursor.fetchall()
        inserted = {row[2]: row[1] for row in result if row[0] == "e"}
        return event_store.Stored(inserted, claimed_holds([row[1:] for row in result if row[0] == "h"]))

    fixture = create_fixture(1)
    key = ApiKey.objects.select_related("tenant").get(pk=fixture.tenants[0][1])
    real_insert = ingest_service.insert_new
    counter = iter(range(1, 1 << 40))

    def run(insert_new, n: int) -> float:
        batches = [make_events(f"s{next(counter)}-", 0, 1000, now_iso()) for _ in range(n)]
        ingest_service.insert_new = insert_new
        try:
            started = time.perf_counter()
            for raw in batches:
                result = ingest_service.usage_record_batch(raw_events=raw, api_key=key)
                assert result.items[0].status == "accepted"
            return n * 1000 / (time.perf_counter() - started)
        finally:
            ingest_service.insert_new = real_insert

    run(real_insert, 3)  # warm-up: prices, plans and counters cached on both paths
    run(flat_insert_new, 3)
    ratios = []
    for round_no in range(args.rounds):
        if round_no % 2:
            old = run(flat_insert_new, args.batches)
            new = run(real_insert, args.batches)
        else:
            new = run(real_insert, args.batches)
            old = run(flat_insert_new, args.batches)
        ratios.append(new / old)
        print(f"  service round {round_no + 1}: partitioned + key table {new:,.0f} ev/s, unpartitioned {old:,.0f} "
              f"ev/s, ratio {new / old:.3f}; load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    print(
        f"ingest service (paired, {args.rounds} rounds): median ratio {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


def archive_and_restore(connection) -> None:
    from metering import partitions  # noqa: PLC0415 - after django.setup()
    from metering.services import archive  # noqa: PLC0415 - after django.setup()

    table_bytes = partitions.table_bytes(month=MONTH)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_relation_size('{partitions.partition_name(MONTH)}')")
        heap = cursor.fetchone()[0]
    print(f"partition {partitions.partition_name(MONTH)}: {table_bytes:,} bytes with indexes ({heap:,} heap)")

    class StageLog(logging.Handler):  # the job's own stage log lines, with their times
        def emit(self, record: logging.LogRecord) -> None:
            fields = {
                key: getattr(record, key) for key in ("seconds", "scan_seconds", "concurrent") if hasattr(record, key)
            }
            print(f"  {record.msg}: {fields}", flush=True)

    job_log = logging.getLogger("metering.archive")
    job_log.setLevel(logging.INFO)
    job_log.propagate = False  # the stage lines above only, not the JSON log too
    job_log.addHandler(StageLog())
    stages: dict[str, float] = {}

    def progress(stage: str, done: int) -> None:
        if stage not in stages:  # the first report of a stage: how long everything before took
            stages[stage] = time.monotonic()
            print(f"  {stage} starts at {stages[stage] - started:.1f} s", flush=True)

    started = time.monotonic()
    result = archive.usage_archive_month(month=MONTH, now=dt.datetime.now(dt.UTC), progress=progress)
    seconds = time.monotonic() - started
    print(
        f"archive: {result.rows:,} events in {seconds:.1f} s ({result.rows / seconds:,.0f} ev/s); "
        f"file {result.file_bytes:,} bytes = {result.file_bytes / table_bytes:.1%} of the partition with "
        f"indexes, {result.file_bytes / heap:.1%} of its heap; {result.file_bytes / result.rows:.1f} bytes/event"
    )
    started = time.monotonic()
    restored = archive.usage_archive_restore(month=MONTH, progress=progress)
    seconds = time.monotonic() - started
    print(f"restore: {restored.rows:,} events into {restored.table} in {seconds:.1f} s")


if __name__ == "__main__":
    main()
