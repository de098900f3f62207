"""Monthly partitions of the usage table: the storage DDL, and nothing else.

On PostgreSQL `metering_usageevent` is partitioned by RANGE (occurred_at), one partition per
UTC month (`metering_usageevent_p2026_10`) plus a DEFAULT partition that catches a time whose
month was not created yet, so an insert never fails for want of a partition. The beat task
`metering.tasks.usage_partitions_ensure` creates the months from the oldest one ingest still
accepts (INGEST_MAX_PAST_DAYS) to USAGE_PARTITIONS_AHEAD months ahead; rows that reached the
default partition for a month are moved into it when it is created. Archived months are never
created again. SQLite keeps one plain table: the same functions report no partitions there and
remove a month with DELETE.

Business rules (exactly once, rating, billing) never depend on this module: the exactly-once
key is UsageRequest on both databases.
"""

import datetime as dt
from dataclasses import dataclass

from django.db import connection, transaction

from metering.models import UsageEvent

TABLE = UsageEvent._meta.db_table
DEFAULT_PARTITION = f"{TABLE}_default"


def month_start(value: dt.date | dt.datetime) -> dt.date:
    """The first day of the UTC month holding `value` (a datetime is converted to UTC first)."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).date()
    return value.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def month_bounds(month: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a UTC month as aware datetimes."""
    start = dt.datetime.combine(month, dt.time(), tzinfo=dt.UTC)
    return start, dt.datetime.combine(next_month(month), dt.time(), tzinfo=dt.UTC)


def partition_name(month: dt.date) -> str:
    return f"{TABLE}_p{month:%Y_%m}"


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [TABLE])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    month: dt.date | None  # None: the default partition


def partitions() -> list[Partition]:
    """The usage table's partitions, months in order, the default partition last."""
    if not is_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY c.relname",
            [TABLE],
        )
        names = [name for (name,) in cursor.fetchall()]
    found = []
    prefix = f"{TABLE}_p"
    for name in names:
        if name.startswith(prefix):
            year, month = name.removeprefix(prefix).split("_")
            found.append(Partition(name, dt.date(int(year), int(month), 1)))
    found.sort(key=lambda part: part.month or dt.date.max)
    if DEFAULT_PARTITION in names:
        found.append(Partition(DEFAULT_PARTITION, None))
    return found


def partition_create(*, month: dt.date) -> bool:
    """Create the month's partition, moving any rows the default partition caught for it; False
    if it exists."""
    if not is_partitioned():
        return False
    month = month_start(month)
    name = partition_name(month)
    start, end = month_bounds(month)
    bounds = f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    with transaction.atomic(), connection.cursor() as cursor:
        # Serialises creators (two beat schedulers): the second one sees the partition.
        cursor.execute(f"LOCK TABLE {TABLE} IN SHARE UPDATE EXCLUSIVE MODE")
        cursor.execute("SELECT to_regclass(%s)", [name])
        if cursor.fetchone()[0] is not None:
            return False
        # A table of its own, then ATTACH: that locks the parent in SHARE UPDATE EXCLUSIVE mode,
        # which ingest's inserts do not wait for (CREATE TABLE ... PARTITION OF would lock it
        # exclusively). The default partition is locked and checked for the month's rows.
        cursor.execute("SET LOCAL lock_timeout = '10s'")
        cursor.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        cursor.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE occurred_at >= %s AND occurred_at < %s "  # noqa: S608
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            [start, end],
        )
        cursor.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES {bounds}")
    return True


def partitions_ensure(*, now: dt.datetime, max_past_days: int, ahead: int, skip: set[dt.date]) -> list[dt.date]:
    """Create every missing month from the oldest accepted by ingest to `ahead` months after now.

    `skip`: months that must not come back (archived). Returns the months created.
    """
    if not is_partitioned():
        return []
    month = month_start(now - dt.timedelta(days=max_past_days))
    last = month_start(now)
    for _ in range(ahead):
        last = next_month(last)
    created = []
    while month <= last:
        if month not in skip and partition_create(month=month):
            created.append(month)
        month = next_month(month)
    return created


def oldest_month() -> dt.date | None:
    """The oldest month with usage rows: from the partitions' names and the default partition's
    minimum (small), never a scan of the whole table; SQLite reads the minimum directly."""
    if not is_partitioned():
        oldest = UsageEvent.objects.order_by("occurred_at").values_list("occurred_at", flat=True).first()
        return month_start(oldest) if oldest is not None else None
    months = [part.month for part in partitions() if part.month is not None]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(occurred_at) FROM {DEFAULT_PARTITION}")  # noqa: S608
        stray = cursor.fetchone()[0]
    if stray is not None:
        months.append(month_start(stray))
    return min(months) if months else None


def table_bytes(*, month: dt.date) -> int:
    """Bytes on disk of the month's partition with its indexes (0 without partitions)."""
    if not is_partitioned():
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(to_regclass(%s))", [partition_name(month)])
        row = cursor.fetchone()
    return int(row[0] or 0) if row else 0


def month_remove(*, month: dt.date) -> int:
    """Take the month's rows out of the usage table: detach and drop its partition (PostgreSQL), or
    DELETE them (SQLite). Rows of the month in the default partition are deleted too. Returns the
    number of rows removed. The caller holds a verified archive of exactly these rows."""
    start, end = month_bounds(month)
    with transaction.atomic():
        if not is_partitioned():
            return int(UsageEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end).delete()[0])
        name = partition_name(month)
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {DEFAULT_PARTITION} WHERE occurred_at >= %s AND occurred_at < %s",  # noqa: S608
                [start, end],
            )
            removed = int(cursor.rowcount)
            cursor.execute("SELECT to_regclass(%s)", [name])
            if cursor.fetchone()[0] is not None:
                cursor.execute(f"SELECT count(*) FROM {name}")  # noqa: S608
                removed += int(cursor.fetchone()[0])
                # DETACH takes the parent's ACCESS EXCLUSIVE lock for a moment: wait for it a
                # bounded time (ingest queues behind the wait), else fail and roll back.
                cursor.execute("SET LOCAL lock_timeout = '10s'")
                cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
                cursor.execute(f"DROP TABLE {name}")
        return removed
