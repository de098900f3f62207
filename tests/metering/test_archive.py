"""Archival of a usage month (export, verify, drop) and its restore, with data in place.

Every test compares counts and per-tenant sums before and after: no row lost or doubled.
The archive storage is a real directory per test; a storage that damages what it stores
proves the verification runs before anything is dropped.
"""

import datetime as dt
import hashlib
import json
from decimal import Decimal
from io import StringIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.db import connection

from metering import partitions
from metering.models import ArchivedUsageTotal, DailyUsage, UsageArchive, UsageEvent
from metering.services import archive, rollup
from metering.services.event_store import NewEvent, insert_new
from tests.invoicing.helpers import utc

pytestmark = pytest.mark.django_db

OCTOBER = dt.date(2026, 10, 1)
LATER = utc(2027, 12, 15)  # October 2026 is past INGEST_MAX_PAST_DAYS (400) by then


class DamagingStorage(FileSystemStorage):
    """Stores every data file with one byte flipped (a disk or a network that corrupts)."""

    def _save(self, name, content):
        if not name.endswith(".parquet"):
            return super()._save(name, content)
        data = bytearray(content.read())
        data[len(data) // 2] ^= 0xFF
        return super()._save(name, ContentFile(bytes(data)))


@pytest.fixture
def store(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": tmp_path}},
    }
    return tmp_path


def _event(tenant, key, n: int, at: dt.datetime, *, cost: str | None = "0.000123456789012345", metadata=None):
    return NewEvent(
        tenant_id=tenant.pk,
        api_key_id=key.pk,
        request_id=f"ev-{tenant.pk}-{n}",
        model="gpt-4o",
        input_tokens=1000 + n,
        output_tokens=n,
        cached_input_tokens=n % 7,
        cache_write_tokens=0,
        occurred_at=at,
        received_at=at + dt.timedelta(minutes=n % 90),
        latency_ms=n if n % 3 else None,
        metadata=metadata if metadata is not None else {"n": n},
        token_source="reported",
        encoding="",
        cost=Decimal(cost) if cost is not None else None,
        currency="USD",
        price_id=None,
        body_hash=f"{n:064d}",
    )


@pytest.fixture
def usage(key_a, key_b):
    """Two tenants: October 2026 (with odd metadata, unpriced events, month edges), November."""
    tenants = ((key_a.row.tenant, key_a.row), (key_b.row.tenant, key_b.row))
    for tenant, key in tenants:
        events = [_event(tenant, key, n, utc(2026, 10, 1) + dt.timedelta(minutes=17 * n)) for n in range(600)]
        events.append(_event(tenant, key, 1000, utc(2026, 10, 1)))  # first instant of the month
        events.append(_event(tenant, key, 1001, utc(2026, 10, 31, 23, 59, 59, 999999), cost=None))
        events.append(_event(tenant, key, 1002, utc(2026, 10, 9), metadata={"q": 'a"b\\c\n\t\u00e9\u4e2d\u0001'}))
        events.append(_event(tenant, key, 1003, utc(2026, 11, 1)))  # first instant of November
        events.append(_event(tenant, key, 1004, utc(2026, 9, 30, 23, 59, 59, 999999)))
        insert_new(events)
    return tenants


def _rows(where: str = "", table: str = "metering_usageevent") -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} {where} ORDER BY id")
        return cursor.fetchall()


def _october(where: str = "") -> str:
    clause = "occurred_at >= '2026-10-01T00:00:00+00:00' AND occurred_at < '2026-11-01T00:00:00+00:00'"
    return f"WHERE {clause}{where}"


def test_a_month_is_archived_verified_dropped_and_restored_exactly(store, usage):
    partitions.partition_create(month=OCTOBER)
    october = _rows(_october())
    others = _rows("WHERE NOT (" + _october().removeprefix("WHERE ") + ")")
    assert len(october) == 2 * 603
    result = archive.usage_archive_month(month=OCTOBER, now=LATER)
    assert result.rows == len(october)
    assert _rows(_october()) == []
    assert _rows() == others  # September and November untouched
    names = [part.name for part in partitions.partitions()]
    assert "metering_usageevent_p2026_10" not in names
    stored = UsageArchive.objects.get(period=OCTOBER)
    assert stored.status == "dropped" and stored.rows == len(october)
    manifest = json.loads((store / "usage" / "2026-10.manifest.json").read_text())
    assert manifest["sha256"] == stored.sha256 and manifest["rows"] == len(october)
    tenant_a = usage[0][0]
    assert manifest["tenants"][str(tenant_a.pk)]["rows"] == 603
    assert manifest["tenants"][str(tenant_a.pk)]["unpriced"] == 1
    assert Decimal(manifest["tenants"][str(tenant_a.pk)]["cost"]) == Decimal("0.000123456789012345") * 602
    stored_file = pq.ParquetFile(store / "usage" / "2026-10.parquet")
    assert stored_file.metadata.num_rows == len(october)
    assert "body_hash" not in stored_file.schema_arrow.names  # the key table keeps it

    restored = archive.usage_archive_restore(month=OCTOBER)
    assert restored.rows == len(october)
    assert _rows(table=restored.table) == october  # every column, ids included


def test_restore_one_tenant_and_refuse_to_overwrite(store, usage):
    archive.usage_archive_month(month=OCTOBER, now=LATER)
    tenant_b = usage[1][0]
    out = StringIO()
    call_command("restore_archive", "--period", "2026-10", "--tenant", tenant_b.slug, stdout=out, stderr=StringIO())
    assert "603 rows restored into metering_usageevent_restored_2026_10" in out.getvalue()
    table = archive.side_table(OCTOBER)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT tenant_id FROM {table}")
        assert cursor.fetchall() == [(tenant_b.pk,)]
    with pytest.raises(CommandError, match="exists already"):
        call_command("restore_archive", "--period", "2026-10", stdout=StringIO(), stderr=StringIO())
    call_command("restore_archive", "--period", "2026-10", "--replace", stdout=StringIO(), stderr=StringIO())
    assert len(_rows(table=table)) == 2 * 603


def test_a_damaged_file_is_caught_before_anything_is_dropped(settings, store, usage):
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {"BACKEND": f"{__name__}.DamagingStorage", "OPTIONS": {"location": store}},
    }
    before = _rows()
    with pytest.raises(archive.ArchiveCorrupt, match="SHA-256"):
        archive.usage_archive_month(month=OCTOBER, now=LATER)
    assert _rows() == before
    assert not UsageArchive.objects.exists()


def test_the_manifest_catches_a_file_rewritten_with_a_matching_hash(store, usage):
    """A file altered by someone who also fixed the hash: the row sums still tell."""
    archive.usage_archive_month(month=OCTOBER, now=LATER)
    stored = UsageArchive.objects.get(period=OCTOBER)
    path = store / stored.file_name
    table = pq.read_table(path)
    tokens = table.column("input_tokens").to_pylist()
    tokens[5] += 1  # one token more on one event
    table = table.set_column(table.schema.get_field_index("input_tokens"), "input_tokens", pa.array(tokens))
    pq.write_table(table, path)

    stored.manifest["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(archive.ArchiveCorrupt, match="differ from the manifest"):
        archive.verify_file(name=stored.file_name, manifest=stored.manifest)
    with pytest.raises(CommandError, match="SHA-256"):
        call_command("archive_usage", "--verify", "2026-10", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(archive.ArchiveCorrupt):
        archive.usage_archive_restore(month=OCTOBER)


def test_a_month_ingest_still_accepts_is_refused(store, usage):
    with pytest.raises(archive.ArchiveRefused, match="can still receive events"):
        archive.usage_archive_month(month=OCTOBER, now=utc(2027, 11, 1))
    with pytest.raises(CommandError, match="can still receive events"):
        call_command("archive_usage", "--period", "2026-10", stdout=StringIO(), stderr=StringIO())
    assert len(_rows(_october())) == 2 * 603


def test_archiving_twice_does_nothing_the_second_time(store, usage):
    first = archive.usage_archive_month(month=OCTOBER, now=LATER)
    second = archive.usage_archive_month(month=OCTOBER, now=LATER)
    assert second.already and second.rows == first.rows
    assert ArchivedUsageTotal.objects.filter(archive__period=OCTOBER).count() > 0


def test_beat_archives_the_months_past_retention_only(settings, store, usage):
    settings.USAGE_RETENTION_MONTHS = 13
    # December 2027: keep December back to November 2026; September and October 2026 go.
    results = archive.usage_archive_due(now=LATER)
    with_rows = {result.period: result.rows for result in results if result.rows}
    assert with_rows == {dt.date(2026, 9, 1): 2, OCTOBER: 2 * 603}
    assert max(result.period for result in results) == OCTOBER  # (empty older months go too)
    assert UsageEvent.objects.count() == 2  # November's two events
    settings.USAGE_RETENTION_MONTHS = 0
    assert archive.months_due(now=utc(2040, 1, 1), keep_months=0) == []


def test_archive_command_prints_the_figures_and_validates_its_arguments(settings, store, usage):
    settings.INGEST_MAX_PAST_DAYS = 30  # the command archives as of now: September 2026 is closed to ingest
    out = StringIO()
    call_command("archive_usage", "--period", "2026-09", stdout=out, stderr=StringIO())
    assert "2026-09: 2 rows archived" in out.getvalue()
    with pytest.raises(CommandError, match="YYYY-MM"):
        call_command("archive_usage", "--period", "2026-13", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="no archive"):
        call_command("restore_archive", "--period", "2025-01", stdout=StringIO(), stderr=StringIO())


def test_a_replay_of_an_archived_event_is_still_recognised(settings, store, usage, key_a):
    """The key outlives its event: a replay of an archived request_id is never stored again,
    even after the ingest window was widened to reach the archived month."""
    archive.usage_archive_month(month=OCTOBER, now=LATER)
    settings.INGEST_MAX_PAST_DAYS = 100_000
    tenant = usage[0][0]
    body = {"request_id": f"ev-{tenant.pk}-5", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}
    body["timestamp"] = "2026-10-02T00:00:00Z"
    response = key_a.post("/api/v1/events", body)
    assert response.status_code == 409
    assert not UsageEvent.objects.filter(request_id=f"ev-{tenant.pk}-5").exists()


def test_rollups_of_archived_days_survive_any_rebuild(store, usage):
    """Rollups are never archived: rebuilding from the events still online must not erase the
    days whose events went to the archive (a whole rebuild, one tenant's, one day's)."""
    tenant_b = usage[1][0]  # Asia/Shanghai: its 2026-11-01 holds the last 8 hours of UTC October
    for tenant, _ in usage:
        rollup.rollup_tenant(tenant_id=tenant.pk)
    before = sorted(DailyUsage.objects.values_list("tenant_id", "day", "requests", "cost", "input_tokens"))
    archive.usage_archive_month(month=OCTOBER, now=LATER)
    call_command("rollup", "--all", stdout=StringIO(), stderr=StringIO())
    rollup.rollup_tenant(tenant_id=tenant_b.pk)
    rollup.rollup_date(day=dt.date(2026, 10, 9))
    assert sorted(DailyUsage.objects.values_list("tenant_id", "day", "requests", "cost", "input_tokens")) == before


def test_restore_reattaches_each_body_hash_from_the_key_table_and_checks_the_rows(store, usage):
    """The file leaves the body hash out; restore takes it from UsageRequest, and the rows'
    digest (every column, body hash included) proves the side table holds the originals."""
    october = _rows(_october())
    archive.usage_archive_month(month=OCTOBER, now=LATER)
    restored = archive.usage_archive_restore(month=OCTOBER)
    assert _rows(table=restored.table) == october
    with connection.cursor() as cursor:  # a key whose body hash changed since: the digest tells
        cursor.execute(
            "UPDATE metering_usagerequest SET body_hash = repeat('f', 64) WHERE request_id = %s",
            [f"ev-{usage[0][0].pk}-7"],
        )
    with pytest.raises(archive.ArchiveCorrupt, match="differ from the originals"):
        archive.usage_archive_restore(month=OCTOBER, replace=True)
    assert _rows(table=restored.table) == october  # the failed restore changed nothing


def _refused_for_a_missing_key(usage) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM metering_usagerequest WHERE request_id = %s", [f"ev-{usage[1][0].pk}-3"])
    before = _rows()
    with pytest.raises(archive.ArchiveRefused, match="no key"):
        archive.usage_archive_month(month=OCTOBER, now=LATER)
    assert _rows() == before and not UsageArchive.objects.exists()


def test_a_month_with_an_event_without_its_key_is_not_archived(store, usage):
    _refused_for_a_missing_key(usage)


def test_a_truncated_parquet_file_is_caught(store, usage):
    archive.usage_archive_month(month=OCTOBER, now=LATER)
    stored = UsageArchive.objects.get(period=OCTOBER)
    path = store / stored.file_name
    path.write_bytes(path.read_bytes()[: stored.file_bytes // 2])
    stored.manifest["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(archive.ArchiveCorrupt, match="unreadable"):
        archive.verify_file(name=stored.file_name, manifest=stored.manifest)


def _swap(path, column: str, first: int, second: int) -> None:
    """Trade one column's values between two rows of the file: every count and sum stays."""
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[first], values[second] = values[second], values[first]
    index = table.schema.get_field_index(column)
    table = table.set_column(index, table.schema.field(index), pa.array(values, type=table.schema.field(index).type))
    pq.write_table(table, path)


def _trade_body_hashes(first: str, second: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE metering_usagerequest k SET body_hash = o.body_hash FROM metering_usagerequest o "
            "WHERE (k.request_id, o.request_id) IN ((%s, %s), (%s, %s)) AND k.tenant_id = o.tenant_id",
            [first, second, second, first],
        )
        assert cursor.rowcount == 2


def test_the_rows_digest_catches_a_changed_row_that_every_sum_misses(store, usage):
    """Two events of one tenant trade their token counts (or their keys trade body hashes):
    rows, sums and the file's verification all agree; the rows' digest tells on restore."""
    october = _rows(_october())
    archive.usage_archive_month(month=OCTOBER, now=LATER)
    stored = UsageArchive.objects.get(period=OCTOBER)
    path = store / stored.file_name
    pristine = path.read_bytes()
    first, second = 3, 4  # two rows of the same tenant, different token counts
    tenants = pq.read_table(path, columns=["tenant_id", "input_tokens"]).to_pylist()
    assert tenants[first]["tenant_id"] == tenants[second]["tenant_id"]
    assert tenants[first]["input_tokens"] != tenants[second]["input_tokens"]
    _swap(path, "input_tokens", first, second)
    stored.manifest["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    stored.save(update_fields=["manifest"])
    archive.verify_file(name=stored.file_name, manifest=stored.manifest)  # the sums cannot see it
    with pytest.raises(archive.ArchiveCorrupt, match="differ from the originals"):
        archive.usage_archive_restore(month=OCTOBER)

    path.write_bytes(pristine)
    stored.manifest["sha256"] = hashlib.sha256(pristine).hexdigest()
    stored.save(update_fields=["manifest"])
    tenant = usage[0][0]
    _trade_body_hashes(f"ev-{tenant.pk}-1", f"ev-{tenant.pk}-2")  # as if joined to the wrong rows
    with pytest.raises(archive.ArchiveCorrupt, match="differ from the originals"):
        archive.usage_archive_restore(month=OCTOBER)
    _trade_body_hashes(f"ev-{tenant.pk}-1", f"ev-{tenant.pk}-2")  # and back
    restored = archive.usage_archive_restore(month=OCTOBER)
    assert _rows(table=restored.table) == october


# How manifests written before the binary canonical form computed the rows' digest.
_ROW_TEXT_DIGEST = (
    "SELECT tenant_id::text, sum(('x' || substr(h, 1, 16))::bit(64)::bigint)::text || ':' || "
    "sum(('x' || substr(h, 17, 16))::bit(64)::bigint)::text FROM (SELECT t.tenant_id, "
    "encode(sha256(convert_to(ROW({columns})::text, 'UTF8')), 'hex') AS h FROM metering_usageevent t {where} "
    "OFFSET 0) d GROUP BY 1"
)


def test_an_archive_whose_manifest_has_the_row_text_digest_still_restores(store, usage):
    october = _rows(_october())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'metering_usageevent'::regclass AND attnum > 0 "
            "AND NOT attisdropped AND attname <> 'body_hash' ORDER BY attnum"
        )
        columns = [name for (name,) in cursor.fetchall()] + ["body_hash"]
        cursor.execute(_ROW_TEXT_DIGEST.format(columns=", ".join(f't."{c}"' for c in columns), where=_october()))
        old_digests = dict(cursor.fetchall())
    archive.usage_archive_month(month=OCTOBER, now=LATER)
    stored = UsageArchive.objects.get(period=OCTOBER)
    assert stored.manifest["columns"] + ["body_hash"] == columns
    assert stored.manifest.pop("digest") == archive.DIGEST_FORM
    for tenant, sums in stored.manifest["tenants"].items():
        assert sums["digest"] != old_digests[tenant]  # another canonical form, another digest
        sums["digest"] = old_digests[tenant]
    stored.save(update_fields=["manifest"])
    restored = archive.usage_archive_restore(month=OCTOBER)
    assert _rows(table=restored.table) == october

    stored.manifest["digest"] = "crc32"
    stored.save(update_fields=["manifest"])
    with pytest.raises(archive.ArchiveCorrupt, match="unknown form"):
        archive.usage_archive_restore(month=OCTOBER, replace=True)


@pytest.fixture
def committed():
    """For tests whose rows are committed (the scan's second connection must see them): leave
    the database as the other tests expect it, whatever the test did."""
    partitions_before = partitions.partitions()
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {archive.side_table(OCTOBER)}")
    for part in partitions_before:
        if part.month is not None and part not in partitions.partitions():
            partitions.partition_create(month=part.month)


@pytest.mark.django_db(transaction=True)
def test_the_manifest_is_scanned_on_a_second_connection_while_the_export_runs(committed, store, usage, caplog):
    """Outside a caller's transaction the manifest's scan runs beside the export, in the same
    snapshot: the manifest still matches the file and the restore is exact."""
    october = _rows(_october())
    with caplog.at_level("INFO", logger="metering.archive"):
        result = archive.usage_archive_month(month=OCTOBER, now=LATER)
    scanned = [record for record in caplog.records if record.msg == "archive.scanned"]
    assert [record.concurrent for record in scanned] == [True]
    assert result.rows == len(october) and _rows(_october()) == []
    stored = UsageArchive.objects.get(period=OCTOBER)
    assert stored.manifest["tenants"][str(usage[0][0].pk)]["rows"] == 603
    assert ArchivedUsageTotal.objects.filter(archive=stored).count() > 0
    restored = archive.usage_archive_restore(month=OCTOBER)
    assert _rows(table=restored.table) == october


@pytest.mark.django_db(transaction=True)
def test_a_refusal_from_the_second_connection_stops_the_archive(committed, store, usage):
    """The key check runs in the scan on the second connection: its refusal reaches the job,
    which rolls back with every row in place."""
    _refused_for_a_missing_key(usage)
