"""Archive a month of usage events to a compressed file, verify it, drop the month; restore it.

On PostgreSQL the file is Parquet (`tokenbill.usage.v2`) in the "archive" storage
(settings.STORAGES; a local directory by default, S3-compatible through django-storages),
`usage/2025-10.parquet`: zstd, dictionary-encoded columns, delta-encoded ids and times, the
columns as read from the database at export time (so columns added later come along) except
`body_hash`, which the key table (UsageRequest, never archived) keeps for every event. PostgreSQL
writes the rows (COPY ... TO STDOUT, CSV) and Arrow parses and encodes them in batches of
_PARQUET_BATCH rows: no per-row Python. Beside it, `usage/2025-10.manifest.json`: row count,
per-tenant counts and sums of tokens and cost, the SHA-256 of the file, and per tenant a digest
of the full rows (each row's SHA-256 over its canonical binary form, body hash included, summed;
DIGEST_FORM below): a restore must reproduce it exactly. A month whose events lack their key is
not archived.
SQLite (the demo) writes the older format, gzip JSON Lines (`tokenbill.usage.v1`,
`usage/2025-10.jsonl.gz`); both formats are verified and restored.

Order of work, all in one transaction: lock the month's rows against writers, export while a
second connection computes the manifest from the database in the same snapshot, then each
tenant's totals per tenant-local month (what reconciliation reads once the rows are gone),
store the file, re-read the stored file and compare it to the manifest (bytes hashed, every
row read and summed), record the archive with those totals, then detach and drop the month
(metering.partitions.month_remove). A failure anywhere leaves the rows where they
were. A month is archived only once ingest can no longer accept an event for it
(INGEST_MAX_PAST_DAYS, plus a day for tenant time zones): a late event for it is refused.

Restore (`usage_archive_restore`) reads a verified file back into a side table,
`metering_usageevent_restored_2025_10`, exactly as the rows were (ids included; for Parquet,
COPY FROM STDIN into a staging table, then the body hashes joined back from the key table, then
the rows' digest checked against the manifest), for an audit or a dispute; rollups, invoices
and reconciliation never read it.
"""

import datetime as dt
import gzip
import hashlib
import io
import logging
import re
import tempfile
import time
import zlib
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

import orjson
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from accounts.models import Tenant
from metering import partitions
from metering.models import ArchivedUsageTotal, UsageArchive, UsageEvent

logger = logging.getLogger("metering.archive")

FORMAT = "tokenbill.usage.v1"
STORAGE_ALIAS = "archive"
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")
_CHUNK = 1 << 20
_RESTORE_BATCH = 20_000
Progress = Callable[[str, int], None]  # (stage, rows so far)


class ArchiveRefused(Exception):
    """The month cannot be archived or restored now; the message says why."""


class ArchiveCorrupt(Exception):
    """A stored file does not match its manifest; the message says what differs."""


def archive_storage() -> Storage:
    return storages[STORAGE_ALIAS]


def file_names(month: dt.date, *, parquet: bool = False) -> tuple[str, str]:
    data = f"usage/{month:%Y-%m}.parquet" if parquet else f"usage/{month:%Y-%m}.jsonl.gz"
    return data, f"usage/{month:%Y-%m}.manifest.json"


def side_table(month: dt.date) -> str:
    return f"{partitions.TABLE}_restored_{month:%Y_%m}"


def archivable_before(*, now: dt.datetime) -> dt.datetime:
    """A month ending at or before this time can no longer receive an event (ingest refuses it)."""
    return now - dt.timedelta(days=settings.INGEST_MAX_PAST_DAYS + 1)


def months_due(*, now: dt.datetime, keep_months: int) -> list[dt.date]:
    """Months with usage still online that are older than `keep_months` whole months before now."""
    if keep_months <= 0:
        return []
    cutoff = partitions.month_start(now)
    for _ in range(keep_months):
        cutoff = (cutoff - dt.timedelta(days=1)).replace(day=1)
    months = {part.month for part in partitions.partitions() if part.month is not None and part.month < cutoff}
    month = partitions.oldest_month()
    while month is not None and month < cutoff:
        months.add(month)
        month = partitions.next_month(month)
    done = set(UsageArchive.objects.filter(status=UsageArchive.Status.DROPPED).values_list("period", flat=True))
    return sorted(month for month in months if month not in done or _has_rows(month))


def _has_rows(month: dt.date) -> bool:
    start, end = partitions.month_bounds(month)
    return UsageEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end).exists()


# --- the manifest: what the database holds for the month -----------------------------------


def _zero() -> dict[str, Any]:
    return {"rows": 0, **dict.fromkeys(TOKEN_COLUMNS, 0), "cost": Decimal(0), "unpriced": 0}


def _manifest_tenants(start: dt.datetime, end: dt.datetime) -> dict[str, dict[str, Any]]:
    rows = (
        UsageEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        .values("tenant_id")
        .annotate(
            n=Count("id"),
            unpriced_n=Count("id", filter=Q(cost__isnull=True)),
            cost_sum=Sum("cost"),
            **{f"{column}_sum": Sum(column) for column in TOKEN_COLUMNS},
        )
        .order_by("tenant_id")
    )
    return {
        str(row["tenant_id"]): {
            "rows": row["n"],
            **{column: row[f"{column}_sum"] or 0 for column in TOKEN_COLUMNS},
            "cost": row["cost_sum"] if row["cost_sum"] is not None else Decimal(0),
            "unpriced": row["unpriced_n"],
        }
        for row in rows
    }


def _tenant_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")  # a damaged time zone: months cut in UTC (logged below)


def _tenant_months(start: dt.datetime, end: dt.datetime, tenant_ids: list[int]) -> list[ArchivedUsageTotal]:
    """Each tenant's usage of the month per tenant-local month, by occurrence and by reception
    (SQLite; PostgreSQL: _tenant_months_pg)."""
    zones = dict(Tenant.objects.filter(pk__in=tenant_ids).values_list("pk", "timezone"))
    zone_of = {tenant_id: _tenant_zone(zones.get(tenant_id, "UTC")) for tenant_id in tenant_ids}
    totals: list[ArchivedUsageTotal] = []
    for tenant_id, zone in zone_of.items():
        events = UsageEvent.objects.filter(tenant_id=tenant_id, occurred_at__gte=start, occurred_at__lt=end)
        for basis, column in ((ArchivedUsageTotal.Basis.OCCURRED, "occurred_at"), ("received", "received_at")):
            rows = (
                events.annotate(bucket=TruncMonth(column, tzinfo=zone))
                .values("bucket")
                .annotate(n=Count("id"), unpriced_n=Count("id", filter=Q(cost__isnull=True)), cost_sum=Sum("cost"))
                .order_by("bucket")
            )
            totals.extend(
                _total(tenant_id, basis, row["bucket"], n=row["n"], unpriced=row["unpriced_n"], cost=row["cost_sum"])
                for row in rows
            )
    return totals


def _total(
    tenant_id: int, basis: str, bucket: Any, *, n: int, unpriced: int, cost: Decimal | None
) -> ArchivedUsageTotal:
    return ArchivedUsageTotal(
        tenant_id=tenant_id,
        basis=basis,
        month=bucket.date() if isinstance(bucket, dt.datetime) else bucket,
        requests=n,
        unpriced_requests=unpriced,
        cost=cost if cost is not None else Decimal(0),
    )


def _tenant_months_pg(start: dt.datetime, end: dt.datetime) -> list[ArchivedUsageTotal]:
    """The same totals in one scan of the month (both bases as grouping sets), for every tenant
    with events in it: it needs no list of them from the manifest, so it runs while the
    manifest's scan does."""
    zones = {pk: _tenant_zone(name).key for pk, name in Tenant.objects.values_list("pk", "timezone")}
    sql = (
        "SELECT tenant_id, occurred, received, count(*), count(*) FILTER (WHERE cost IS NULL), sum(cost), "  # noqa: S608
        "GROUPING(received) FROM (SELECT e.tenant_id, e.cost, "
        "date_trunc('month', e.occurred_at AT TIME ZONE coalesce(z.tz, 'UTC'))::date AS occurred, "
        "date_trunc('month', e.received_at AT TIME ZONE coalesce(z.tz, 'UTC'))::date AS received "
        f"FROM {partitions.TABLE} e LEFT JOIN unnest(%s::bigint[], %s::text[]) AS z(tenant_id, tz) "
        "ON z.tenant_id = e.tenant_id WHERE e.occurred_at >= %s AND e.occurred_at < %s) AS m "
        "GROUP BY GROUPING SETS ((tenant_id, occurred), (tenant_id, received))"
    )
    params: list[Any] = [list(zones), list(zones.values())]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, start, end])
        rows = cursor.fetchall()
    totals = []
    for tenant_id, occurred, received, n, unpriced, cost, by_occurred in rows:
        basis, bucket = ("occurred", occurred) if by_occurred else ("received", received)
        totals.append(_total(tenant_id, basis, bucket, n=n, unpriced=unpriced, cost=cost))
    return totals


# --- export ---------------------------------------------------------------------------------


def _pg_columns(cursor: Any) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [partitions.TABLE],
    )
    return [(name, pg_type) for name, pg_type in cursor.fetchall()]


def _export_portable(out: IO[bytes], start: dt.datetime, end: dt.datetime) -> list[str]:
    fields = list(UsageEvent._meta.concrete_fields)
    names = [field.column for field in fields]
    out.write(orjson.dumps({"format": FORMAT, "columns": names}) + b"\n")
    events = UsageEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end).order_by("id")
    for row in events.values_list(*[field.attname for field in fields]).iterator(chunk_size=5000):
        values = [str(value) if isinstance(value, Decimal) else value for value in row]
        out.write(orjson.dumps(values, option=orjson.OPT_NAIVE_UTC) + b"\n")
    return names


class _GzipHashWriter:
    """Compress into `target` (gzip) and hash the compressed bytes on the way."""

    def __init__(self, target: IO[bytes], level: int) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.raw = 0
        self._zip = zlib.compressobj(level, zlib.DEFLATED, 31)

    def write(self, data: bytes) -> None:
        self.raw += len(data)
        self._out(self._zip.compress(data))

    def tell(self) -> int:
        return self.raw

    def close(self) -> None:
        self._out(self._zip.flush())

    def _out(self, data: bytes) -> None:
        if data:
            self.sha.update(data)
            self.target.write(data)


# --- verification ---------------------------------------------------------------------------


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
        tail = b""
        while chunk := unzipped.read(_CHUNK):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            yield from lines
        if tail:
            yield tail


def verify_file(*, name: str, manifest: dict[str, Any], progress: Progress | None = None) -> None:
    """Re-read a stored file: its SHA-256, its row count and each tenant's sums must match."""
    storage = archive_storage()
    if not storage.exists(name):
        raise ArchiveCorrupt(f"{name}: the file is missing from the archive storage.")
    sha = hashlib.sha256()
    with storage.open(name, "rb") as stored:
        while chunk := stored.read(_CHUNK):
            sha.update(chunk)
    if sha.hexdigest() != manifest["sha256"]:
        raise ArchiveCorrupt(f"{name}: SHA-256 {sha.hexdigest()} differs from the manifest's {manifest['sha256']}.")
    found = _sum_parquet(name, progress) if manifest["format"] == PARQUET_FORMAT else _sum_file(name, progress)
    expected = {
        tenant: {key: Decimal(str(value)) for key, value in sums.items() if key != "digest"}
        for tenant, sums in manifest["tenants"].items()
    }
    found_text = {tenant: {key: Decimal(str(value)) for key, value in sums.items()} for tenant, sums in found.items()}
    rows = sum(sums["rows"] for sums in found.values())
    if rows != manifest["rows"]:
        raise ArchiveCorrupt(f"{name}: {rows} rows read, the manifest says {manifest['rows']}.")
    if found_text != expected:
        differing = sorted(t for t in set(expected) | set(found_text) if expected.get(t) != found_text.get(t))
        raise ArchiveCorrupt(f"{name}: the sums of tenant(s) {', '.join(differing)} differ from the manifest.")


def _sum_file(name: str, progress: Progress | None) -> dict[str, dict[str, Any]]:
    sums: dict[str, dict[str, Any]] = defaultdict(_zero)
    try:
        with archive_storage().open(name, "rb") as stored:
            lines = _lines(stored)
            header = orjson.loads(next(lines))
            if header.get("format") != FORMAT:
                raise ArchiveCorrupt(f"{name}: not a {FORMAT} file.")
            at = {column: header["columns"].index(column) for column in ("tenant_id", "cost", *TOKEN_COLUMNS)}
            tenant_at, cost_at = at["tenant_id"], at["cost"]
            token_at = [(column, at[column]) for column in TOKEN_COLUMNS]
            for count, line in enumerate(lines, 1):
                row = orjson.loads(line)
                tenant = sums[str(row[tenant_at])]
                tenant["rows"] += 1
                for column, index in token_at:
                    tenant[column] += row[index]
                if row[cost_at] is None:
                    tenant["unpriced"] += 1
                else:
                    tenant["cost"] += Decimal(row[cost_at])
                if progress is not None and count % 1_000_000 == 0:
                    progress("verify", count)
    except (OSError, EOFError, zlib.error, orjson.JSONDecodeError, StopIteration, ValueError, KeyError) as exc:
        raise ArchiveCorrupt(f"{name}: unreadable ({exc.__class__.__name__}: {exc}).") from exc
    return dict(sums)


# --- the archive job ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    period: dt.date
    rows: int
    file_bytes: int
    table_bytes: int
    seconds: float
    already: bool = False  # archived before; nothing done


def usage_archive_month(*, month: dt.date, now: dt.datetime, progress: Progress | None = None) -> ArchiveResult:
    """Export, verify, record and drop one UTC month of usage events (see the module docstring)."""
    month = partitions.month_start(month)
    start, end = partitions.month_bounds(month)
    if end > archivable_before(now=now):
        raise ArchiveRefused(
            f"{month:%Y-%m} can still receive events (INGEST_MAX_PAST_DAYS={settings.INGEST_MAX_PAST_DAYS}): "
            f"only months ending before {archivable_before(now=now):%Y-%m-%d} can be archived."
        )
    existing = UsageArchive.objects.filter(period=month).first()
    if existing is not None and existing.status == UsageArchive.Status.DROPPED and not _has_rows(month):
        return ArchiveResult(month, existing.rows, existing.file_bytes, existing.table_bytes, 0.0, already=True)
    if existing is not None and existing.status == UsageArchive.Status.DROPPED:
        raise ArchiveRefused(f"{month:%Y-%m} was archived before but has rows again; investigate before archiving.")
    started = time.monotonic()
    parquet = connection.vendor == "postgresql"
    nested = connection.in_atomic_block  # a caller's transaction: its rows are visible to it alone
    data_name, manifest_name = file_names(month, parquet=parquet)
    with transaction.atomic(), tempfile.NamedTemporaryFile(suffix=".archive") as spool:
        table_bytes = partitions.table_bytes(month=month)
        if parquet:
            with connection.cursor() as cursor:
                file_columns = [(name, pg_type) for name, pg_type in _pg_columns(cursor) if name not in _NOT_IN_FILE]
                _lock_month(cursor, start)
            # The manifest's scan reads the same rows as the export, on a second connection at the
            # same time; the tenants' totals follow the export here (the two sides about even).
            counting = _Counting(start, end, [name for name, _ in file_columns], nested=nested)
            try:
                columns = _export_parquet(spool.name, start, end, file_columns, progress)
                _log("archive.exported", month, seconds=round(time.monotonic() - started, 2))
                totals = _tenant_months_pg(start, end)
                tenants = counting.result()
            finally:
                counting.close()
            _log(
                "archive.scanned",
                month,
                seconds=round(time.monotonic() - started, 2),
                scan_seconds=round(counting.seconds, 2),
                concurrent=not nested,
            )
            sha, raw = hashlib.sha256(), None
            spool.seek(0)
            while chunk := spool.read(_CHUNK):
                sha.update(chunk)
            spool.seek(0, io.SEEK_END)
        else:
            writer = _GzipHashWriter(spool, settings.ARCHIVE_GZIP_LEVEL)
            columns = _export_portable(writer, start, end)  # type: ignore[arg-type]
            writer.close()
            _log("archive.exported", month, seconds=round(time.monotonic() - started, 2))
            sha, raw = writer.sha, writer.raw
            tenants = _manifest_tenants(start, end)
            totals = _tenant_months(start, end, sorted(int(tenant) for tenant in tenants))
        file_bytes = spool.tell()
        manifest = {
            "format": PARQUET_FORMAT if parquet else FORMAT,
            "period": f"{month:%Y-%m}",
            "file": data_name,
            "sha256": sha.hexdigest(),
            "rows": sum(sums["rows"] for sums in tenants.values()),
            "bytes": file_bytes,
            "uncompressed_bytes": raw,
            "columns": columns,
            **({"digest": DIGEST_FORM} if parquet else {}),
            "tenants": {
                tenant: {k: str(v) if isinstance(v, Decimal) else v for k, v in sums.items()}
                for tenant, sums in tenants.items()
            },
            "created_at": now.isoformat(),
        }
        _log(
            "archive.counted",
            month,
            rows=manifest["rows"],
            file_bytes=file_bytes,
            table_bytes=table_bytes,
            seconds=round(time.monotonic() - started, 2),
        )
        spool.seek(0)
        storage = archive_storage()
        for name in (data_name, manifest_name):
            if storage.exists(name):
                storage.delete(name)  # a run that failed after storing: replaced, never suffixed
        stored_name = storage.save(data_name, File(spool, name=data_name))
        if stored_name != data_name:
            raise ArchiveRefused(f"the archive storage stored {data_name} as {stored_name}; refusing to go on.")
        verify_file(name=data_name, manifest=manifest, progress=progress)
        _log("archive.verified", month, rows=manifest["rows"], seconds=round(time.monotonic() - started, 2))
        storage.save(manifest_name, ContentFile(orjson.dumps(manifest, option=orjson.OPT_INDENT_2), name=manifest_name))
        archive, _ = UsageArchive.objects.update_or_create(
            period=month,
            defaults={
                "status": UsageArchive.Status.VERIFIED,
                "file_name": data_name,
                "sha256": manifest["sha256"],
                "rows": manifest["rows"],
                "file_bytes": file_bytes,
                "table_bytes": table_bytes,
                "manifest": manifest,
                "dropped_at": None,
            },
        )
        archive.totals.all().delete()
        for total in totals:
            total.archive = archive
        ArchivedUsageTotal.objects.bulk_create(totals)
        removed = partitions.month_remove(month=month)
        if removed != manifest["rows"]:
            raise ArchiveRefused(f"{month:%Y-%m}: {removed} rows to drop, {manifest['rows']} archived; rolled back.")
        archive.status = UsageArchive.Status.DROPPED
        archive.dropped_at = timezone.now()
        archive.save(update_fields=["status", "dropped_at"])
    seconds = time.monotonic() - started
    _log(
        "archive.dropped",
        month,
        rows=removed,
        file_bytes=file_bytes,
        table_bytes=table_bytes,
        seconds=round(seconds, 2),
    )
    return ArchiveResult(month, removed, file_bytes, table_bytes, seconds)


def _log(event: str, month: dt.date, **fields: Any) -> None:
    logger.info(event, extra={"period": f"{month:%Y-%m}", **fields})


def usage_partitions_ensure(*, now: dt.datetime) -> list[dt.date]:
    """Create the months ingest may write to (never an archived month again)."""
    archived = set(UsageArchive.objects.values_list("period", flat=True))
    created = partitions.partitions_ensure(
        now=now, max_past_days=settings.INGEST_MAX_PAST_DAYS, ahead=settings.USAGE_PARTITIONS_AHEAD, skip=archived
    )
    for month in created:
        logger.info("partition.created", extra={"period": f"{month:%Y-%m}"})
    return created


def usage_archive_due(*, now: dt.datetime, progress: Progress | None = None) -> list[ArchiveResult]:
    """Archive every month older than USAGE_RETENTION_MONTHS that ingest no longer accepts."""
    results = []
    for month in months_due(now=now, keep_months=settings.USAGE_RETENTION_MONTHS):
        try:
            results.append(usage_archive_month(month=month, now=now, progress=progress))
        except ArchiveRefused as exc:
            logger.warning("archive.refused", extra={"period": f"{month:%Y-%m}", "reason": str(exc)})
    return results


# --- restore --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreResult:
    period: dt.date
    table: str
    rows: int
    seconds: float


def usage_archive_restore(
    *, month: dt.date, tenant_id: int | None = None, replace: bool = False, progress: Progress | None = None
) -> RestoreResult:
    """Read an archived month back into its side table (all tenants, or one), exactly as it was."""
    month = partitions.month_start(month)
    archive = UsageArchive.objects.filter(period=month).first()
    if archive is None:
        raise ArchiveRefused(f"{month:%Y-%m} has no archive.")
    verify_file(name=archive.file_name, manifest=archive.manifest)
    started = time.monotonic()
    table = side_table(month)
    with transaction.atomic():
        if _table_exists(table):
            if not replace:
                raise ArchiveRefused(f"{table} exists already (restored before); pass --replace to restore again.")
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE {table}")
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"CREATE TABLE {table} (LIKE {partitions.TABLE} INCLUDING DEFAULTS)")
            else:
                cursor.execute(f"CREATE TABLE {table} AS SELECT * FROM {partitions.TABLE} WHERE 0")  # noqa: S608
        if archive.manifest["format"] == PARQUET_FORMAT:
            rows = _restore_parquet(archive.file_name, table, archive.manifest, tenant_id, progress)
        else:
            rows = _restore_rows(archive.file_name, table, tenant_id, progress)
    seconds = time.monotonic() - started
    _log("archive.restored", month, table=table, rows=rows, tenant_id=tenant_id, seconds=round(seconds, 2))
    return RestoreResult(month, table, rows, seconds)


def _table_exists(table: str) -> bool:
    return table in connection.introspection.table_names()


def _restore_rows(name: str, table: str, tenant_id: int | None, progress: Progress | None) -> int:
    with archive_storage().open(name, "rb") as stored:
        lines = _lines(stored)
        columns: list[str] = orjson.loads(next(lines))["columns"]
        tenant_at = columns.index("tenant_id")
        restore = _restore_pg if connection.vendor == "postgresql" else _restore_portable
        rows, batch = 0, []
        for line in lines:
            batch.append(line)
            if len(batch) == _RESTORE_BATCH:
                rows += restore(table, columns, batch, tenant_at, tenant_id)
                batch = []
                if progress is not None:
                    progress("restore", rows)
        if batch:
            rows += restore(table, columns, batch, tenant_at, tenant_id)
    return rows


def _restore_pg(table: str, columns: list[str], lines: list[bytes], tenant_at: int, tenant_id: int | None) -> int:
    """One INSERT per batch: PostgreSQL parses the JSON arrays and casts to the table's types."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [table],
        )
        types = dict(cursor.fetchall())
        pairs = [(index, name) for index, name in enumerate(columns) if name in types]
        values = ", ".join(
            f"(j->{index})::{types[name]}" if types[name] in ("json", "jsonb") else f"(j->>{index})::{types[name]}"
            for index, name in pairs
        )
        where = f" WHERE (j->>{tenant_at})::bigint = %s" if tenant_id is not None else ""
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(chr(34) + name + chr(34) for _, name in pairs)}) "  # noqa: S608
            f"SELECT {values} FROM jsonb_array_elements(%s::jsonb) AS j{where}",
            [(b"[" + b",".join(lines) + b"]").decode(), *([tenant_id] if tenant_id is not None else [])],
        )
        return int(cursor.rowcount)


def _restore_portable(table: str, columns: list[str], lines: list[bytes], tenant_at: int, tenant_id: int | None) -> int:
    fields = {field.column: field for field in UsageEvent._meta.concrete_fields}
    ops = connection.ops
    rows = []
    for line in lines:
        row = orjson.loads(line)
        if tenant_id is not None and row[tenant_at] != tenant_id:
            continue
        values = []
        for name, raw in zip(columns, row, strict=True):
            field = fields.get(name)
            value = raw
            if raw is not None and field is not None and field.get_internal_type() == "DateTimeField":
                value = ops.adapt_datetimefield_value(dt.datetime.fromisoformat(raw))
            elif isinstance(raw, dict | list):
                value = orjson.dumps(raw).decode()
            values.append(value)
        rows.append(values)
    if rows:
        quoted = ", ".join(f'"{name}"' for name in columns)
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {table} ({quoted}) VALUES ({', '.join(['%s'] * len(columns))})",  # noqa: S608
                rows,
            )
    return len(rows)


# --- Parquet (PostgreSQL): columnar, zstd, the body hash left to the key table ----------------

PARQUET_FORMAT = "tokenbill.usage.v2"
_PARQUET_BATCH = 500_000  # rows per Arrow batch (and Parquet row group): bounded memory
_ZSTD_LEVEL = 3  # zstd's default: on generated months as small as level 6 and 40 % faster
_DELTA = ("id", "occurred_at", "received_at")  # ascending or near it: delta encoding, not a dictionary
_NOT_IN_FILE = ("body_hash",)  # kept forever in UsageRequest; re-attached on restore


def _arrow_type(pg_type: str) -> Any:
    import pyarrow as pa  # noqa: PLC0415 - only the PostgreSQL path needs it

    if pg_type == "bigint":
        return pa.int64()
    if pg_type in ("integer", "smallint"):
        return pa.int32()
    if pg_type == "boolean":
        return pa.bool_()
    if pg_type.startswith("timestamp"):
        return pa.timestamp("us", tz="UTC")
    if pg_type.startswith("numeric(") and "," in pg_type:
        precision, scale = (int(part) for part in pg_type[len("numeric(") : -1].split(","))
        return pa.decimal128(precision, scale)
    return pa.string()  # text, varchar, json(b) as text, numeric without a scale


def _is_time(pg_type: str) -> bool:
    return pg_type.startswith("timestamp")


# The rows' digest, per tenant: each row's SHA-256 over a canonical form of every column (body hash
# included), its first 128 bits as two 64-bit halves, each summed (order-free; sum(bigint) is exact,
# a numeric accumulated in 128-bit integers). The hashes come from a subquery kept apart by
# OFFSET 0, so each row is hashed once, not once per half. A sum of per-row hashes, not of
# per-column ones: two rows trading a value (a body hash joined to the wrong row, say) change it.
#
# The canonical form, DIGEST_FORM, is `record_send(ROW(...))`: the row in PostgreSQL's binary wire
# format (COPY BINARY's), each column as its type, length and value in network byte order; times
# as microseconds, numerics as digits and scale, text in the connection's encoding (UTF-8, Django
# sets it). Nothing is formatted, so it costs about half of the row's text form, "row-text", which
# manifests without a "digest" entry used (archives written before; restored with it).
DIGEST_FORM = "record-send"
_DIGEST_FORMS = {
    DIGEST_FORM: "record_send(ROW({columns}))",
    "row-text": "convert_to(ROW({columns})::text, 'UTF8')",
}
_DIGEST = (
    "sum(substring(row_hash FROM 1 FOR 64)::bigint)::text || ':' || "
    "sum(substring(row_hash FROM 65 FOR 64)::bigint)::text"
)


def _row_hash_sql(columns: list[str], alias: str, form: str = DIGEST_FORM) -> str:
    """Each row's SHA-256, its first 128 bits as bit(128) (see DIGEST_FORM)."""
    row = _DIGEST_FORMS[form].format(columns=", ".join(f"{alias}.{_q(c)}" for c in columns))
    return f"('x' || encode(substring(sha256({row}) FROM 1 FOR 16), 'hex'))::bit(128) AS row_hash"


def _digest_form(manifest: dict[str, Any], name: str) -> str:
    form = manifest.get("digest", "row-text")
    if form not in _DIGEST_FORMS:
        raise ArchiveCorrupt(f"{name}: the manifest's rows digest is of an unknown form {form!r}.")
    return str(form)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _manifest_tenants_pg(start: dt.datetime, end: dt.datetime, columns: list[str]) -> dict[str, dict[str, Any]]:
    """Per tenant, in one scan: count, token and cost sums, unpriced, the rows' digest, and how
    many events have no key carrying their body hash (restore could not re-attach it)."""
    tokens = ", ".join(f"sum(e.{column})" for column in TOKEN_COLUMNS)
    sql = (
        f"SELECT e.tenant_id, count(*), count(*) FILTER (WHERE e.cost IS NULL), sum(e.cost), {tokens}, "  # noqa: S608
        f"{_DIGEST}, count(*) FILTER (WHERE k.body_hash IS DISTINCT FROM e.body_hash) "
        f"FROM (SELECT t.*, {_row_hash_sql(columns, 't')} FROM {partitions.TABLE} t "
        "WHERE t.occurred_at >= %s AND t.occurred_at < %s OFFSET 0) e "
        "LEFT JOIN metering_usagerequest k ON k.tenant_id = e.tenant_id AND k.request_id = e.request_id "
        "GROUP BY e.tenant_id ORDER BY e.tenant_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [start, end])
        rows = cursor.fetchall()
    tenants: dict[str, dict[str, Any]] = {}
    for tenant_id, n, unpriced, cost, *rest in rows:
        *token_sums, digest, keyless = rest
        if keyless:
            raise ArchiveRefused(
                f"tenant {tenant_id}: {keyless} event(s) have no key (UsageRequest) with their body hash; "
                "a restore could not rebuild them, so the month is not archived."
            )
        tenants[str(tenant_id)] = {
            "rows": n,
            **{column: int(value or 0) for column, value in zip(TOKEN_COLUMNS, token_sums, strict=True)},
            "cost": cost if cost is not None else Decimal(0),
            "unpriced": unpriced,
            "digest": digest,
        }
    return tenants


class _Counting:
    """The manifest's scan of a month locked against writers.

    On a second connection, in a transaction that imports this one's snapshot (so it reads
    exactly the rows the export reads), while the export runs: the two are independent, each
    takes about a core. When the caller's transaction is open (`nested`), its own rows are
    invisible to any other connection: then both run here, after the export.
    """

    def __init__(self, start: dt.datetime, end: dt.datetime, file_columns: list[str], *, nested: bool) -> None:
        self._args = (start, end, [*file_columns, *_NOT_IN_FILE])
        self._pool: ThreadPoolExecutor | None = None
        self._raw: Any = None  # the second connection, to cancel its query if the export fails
        self.seconds = 0.0
        if nested:
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-manifest")
        self._future = self._pool.submit(self._in_snapshot, snapshot)

    def result(self) -> dict[str, dict[str, Any]]:
        if self._pool is None:
            return self._count()
        return self._future.result()

    def close(self) -> None:
        if self._pool is None:
            return
        if not self._future.done() and self._raw is not None:
            self._raw.cancel()  # the export failed: stop the scan rather than wait for it
        self._pool.shutdown(wait=True)

    def _in_snapshot(self, snapshot: str) -> dict[str, dict[str, Any]]:
        if not re.fullmatch(r"[0-9A-F]+(-[0-9A-F]+)+", snapshot):
            raise ArchiveRefused(f"unexpected snapshot id {snapshot!r}")
        try:
            with transaction.atomic(), connection.cursor() as cursor:  # this thread's own connection
                self._raw = connection.connection
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                return self._count()
        finally:
            connection.close()

    def _count(self) -> dict[str, dict[str, Any]]:
        started = time.monotonic()
        tenants = _manifest_tenants_pg(*self._args)
        self.seconds = time.monotonic() - started
        return tenants


class _CopyReader(io.RawIOBase):
    """A COPY TO STDOUT as a readable stream (what pyarrow's CSV reader pulls from)."""

    def __init__(self, copy: Any) -> None:
        self._chunks = iter(copy)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = bytes(chunk)
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


def _export_parquet(
    path: str, start: dt.datetime, end: dt.datetime, columns: list[tuple[str, str]], progress: Progress | None
) -> list[str]:
    """COPY the month out as CSV, parsed by Arrow in batches and written as Parquet (zstd)."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.csv as pacsv  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    with connection.cursor() as cursor:
        names = [name for name, _ in columns]
        # Times as integer microseconds since the epoch (exact, no time zone to parse).
        values = ", ".join(
            f"(extract(epoch FROM {_q(name)}) * 1000000)::bigint" if _is_time(pg_type) else _q(name)
            for name, pg_type in columns
        )
        schema = pa.schema([(name, _arrow_type(pg_type)) for name, pg_type in columns])
        schema = schema.with_metadata({"format": PARQUET_FORMAT})
        csv_types = {field.name: pa.int64() if pa.types.is_timestamp(field.type) else field.type for field in schema}
        query = (
            f"COPY (SELECT {values} FROM {partitions.TABLE} "  # noqa: S608
            f"WHERE occurred_at >= '{start.isoformat()}' AND occurred_at < '{end.isoformat()}') "
            "TO STDOUT WITH (FORMAT csv)"
        )
        dictionary = [name for name in names if name not in _DELTA]
        with (
            pq.ParquetWriter(
                path,
                schema,
                compression="zstd",
                compression_level=_ZSTD_LEVEL,
                use_dictionary=dictionary,
                column_encoding={name: "DELTA_BINARY_PACKED" for name in _DELTA if name in names},
                write_statistics=False,
            ) as writer,
            cursor.cursor.copy(query) as copy,
        ):
            try:
                reader = pacsv.open_csv(
                    io.BufferedReader(_CopyReader(copy), buffer_size=_CHUNK),
                    read_options=pacsv.ReadOptions(column_names=names, block_size=32 << 20, use_threads=False),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),
                    # NULL is an empty unquoted field in PostgreSQL's CSV, an empty string is "".
                    convert_options=pacsv.ConvertOptions(
                        column_types=csv_types,
                        true_values=["t"],
                        false_values=["f"],
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                    ),
                )
            except pa.ArrowInvalid as exc:
                if "Empty CSV" not in str(exc):
                    raise
                return names  # an empty month: a file with the columns and no row
            rows = 0
            for batch in reader:
                arrays = [
                    column.cast(field.type) if pa.types.is_timestamp(field.type) else column
                    for column, field in zip(batch.columns, schema, strict=True)
                ]
                writer.write_batch(pa.record_batch(arrays, schema=schema), row_group_size=_PARQUET_BATCH)
                rows += batch.num_rows
                if progress is not None:
                    progress("export", rows)
    return names


def _lock_month(cursor: Any, start: dt.datetime) -> None:
    # No writer on the month while it is read (a re-rating, say); ingest of other months goes on.
    name = partitions.partition_name(partitions.month_start(start))
    cursor.execute("SELECT to_regclass(%s)", [name])
    if cursor.fetchone()[0] is not None:
        cursor.execute(f"LOCK TABLE {name} IN SHARE MODE")


def _sum_parquet(name: str, progress: Progress | None) -> dict[str, dict[str, Any]]:
    """Each tenant's sums recomputed from the stored Parquet file, batch by batch (Arrow)."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    sums: dict[str, dict[str, Any]] = defaultdict(_zero)
    wanted = ["tenant_id", "cost", *TOKEN_COLUMNS]
    aggregates = [("tenant_id", "count"), ("cost", "sum"), ("cost", "count", pa.compute.CountOptions("only_null"))]
    aggregates += [(column, "sum") for column in TOKEN_COLUMNS]
    try:
        with archive_storage().open(name, "rb") as stored:
            parquet = pq.ParquetFile(stored)
            metadata = parquet.schema_arrow.metadata or {}
            if metadata.get(b"format") not in (None, PARQUET_FORMAT.encode()):
                raise ArchiveCorrupt(f"{name}: not a {PARQUET_FORMAT} file.")
            count = 0
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH, columns=wanted):
                grouped = pa.Table.from_batches([batch]).group_by("tenant_id").aggregate(aggregates)
                for row in grouped.to_pylist():
                    tenant = sums[str(row["tenant_id"])]
                    tenant["rows"] += row["tenant_id_count"]
                    tenant["unpriced"] += row["cost_count"]
                    tenant["cost"] += row["cost_sum"] or Decimal(0)
                    for column in TOKEN_COLUMNS:
                        tenant[column] += row[f"{column}_sum"] or 0
                count += batch.num_rows
                if progress is not None:
                    progress("verify", count)
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise ArchiveCorrupt(f"{name}: unreadable ({exc.__class__.__name__}: {exc}).") from exc
    return dict(sums)


def _restore_parquet(
    name: str, table: str, manifest: dict[str, Any], tenant_id: int | None, progress: Progress | None
) -> int:
    """COPY the file into a staging table in batches, then one INSERT ... SELECT re-attaches each
    row's body hash from the key table; the rows' digest must then equal the manifest's."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.csv as pacsv  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    names: list[str] = manifest["columns"]
    form = _digest_form(manifest, name)
    with connection.cursor() as cursor:
        types = dict(_pg_columns(cursor))
        staged = ", ".join(f"{_q(n)} {'bigint' if _is_time(types[n]) else types[n]}" for n in names)
        cursor.execute(f"CREATE TEMP TABLE archive_restore_stage ({staged}) ON COMMIT DROP")
        copy_sql = f"COPY archive_restore_stage ({', '.join(map(_q, names))}) FROM STDIN WITH (FORMAT csv)"
        rows = 0
        try:
            with archive_storage().open(name, "rb") as stored:
                for read in pq.ParquetFile(stored).iter_batches(batch_size=_PARQUET_BATCH, columns=names):
                    batch = read if tenant_id is None else read.filter(pc.equal(read.column("tenant_id"), tenant_id))
                    arrays = [
                        column.cast(pa.int64()) if pa.types.is_timestamp(column.type) else column
                        for column in batch.columns
                    ]
                    out = io.BytesIO()
                    # Every value quoted, NULL bare: PostgreSQL tells "" from NULL exactly so.
                    pacsv.write_csv(
                        pa.record_batch(arrays, names=names),
                        out,
                        pacsv.WriteOptions(include_header=False, quoting_style="all_valid"),
                    )
                    with cursor.cursor.copy(copy_sql) as copy:
                        copy.write(out.getbuffer())
                    rows += batch.num_rows
                    if progress is not None:
                        progress("restore", rows)
        except (OSError, pa.ArrowException) as exc:
            raise ArchiveCorrupt(f"{name}: unreadable ({exc.__class__.__name__}: {exc}).") from exc
        values = ", ".join(
            f"'epoch'::timestamptz + s.{_q(n)} * interval '1 microsecond'" if _is_time(types[n]) else f"s.{_q(n)}"
            for n in names
        )
        try:
            with transaction.atomic():
                cursor.execute(
                    f"INSERT INTO {table} ({', '.join(map(_q, names))}, body_hash) "  # noqa: S608
                    f"SELECT {values}, k.body_hash FROM archive_restore_stage s LEFT JOIN metering_usagerequest k "
                    "ON k.tenant_id = s.tenant_id AND k.request_id = s.request_id"
                )
        except IntegrityError as exc:
            raise ArchiveCorrupt(f"{name}: an event's key (body hash) is missing from UsageRequest: {exc}") from exc
        cursor.execute("DROP TABLE archive_restore_stage")
        cursor.execute(
            f"SELECT tenant_id, count(*), {_DIGEST} FROM (SELECT t.tenant_id, "  # noqa: S608
            f"{_row_hash_sql([*names, 'body_hash'], 't', form)} FROM {table} t OFFSET 0) d GROUP BY tenant_id"
        )
        restored = {str(tenant): (n, digest) for tenant, n, digest in cursor.fetchall()}
    expected = {
        tenant: (sums["rows"], sums["digest"])
        for tenant, sums in manifest["tenants"].items()
        if tenant_id is None or tenant == str(tenant_id)
    }
    if restored != expected:
        differing = sorted(t for t in set(expected) | set(restored) if expected.get(t) != restored.get(t))
        raise ArchiveCorrupt(
            f"{name}: the restored rows of tenant(s) {', '.join(differing)} differ from the originals."
        )
    return rows
