"""Monthly partitions of the usage table (PostgreSQL) and the exactly-once key across them.

The conversion migration is run backwards and forwards with rows in place; replays whose
occurred_at moves to another month are recognised by the key table, not stored twice.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from metering import partitions
from metering.models import UsageEvent, UsageRequest
from metering.services import archive
from tests.factories import EventBodyFactory
from tests.invoicing.helpers import record, utc

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="partitions are PostgreSQL storage")


@pytest.fixture
def api_key_a(key_a):
    return key_a.row


@pytest.fixture
def api_key_b(key_b):
    return key_b.row


def _where(event_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM metering_usageevent WHERE id = %s", [event_id])
        return cursor.fetchone()[0]


def _totals() -> dict[int, tuple[int, int, int, Decimal]]:
    """Per tenant: rows, input and output tokens, cost (the figures a conversion must keep)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tenant_id, count(*), sum(input_tokens), sum(output_tokens), sum(cost) "
            "FROM metering_usageevent GROUP BY tenant_id"
        )
        return {row[0]: tuple(row[1:]) for row in cursor.fetchall()}


@pytest.mark.django_db
def test_the_usage_table_is_partitioned_by_month_with_a_default():
    assert partitions.is_partitioned()
    names = [part.name for part in partitions.partitions()]
    assert names[-1] == "metering_usageevent_default"


@pytest.mark.django_db
def test_each_event_lands_in_its_months_partition_and_a_far_off_one_in_the_default(api_key_a):
    partitions.partition_create(month=dt.date(2026, 10, 1))
    october = record(api_key_a, at=utc(2026, 10, 31, 23, 59, 59))
    far = record(api_key_a, at=utc(2031, 5, 1))
    assert _where(october.pk) == "metering_usageevent_p2026_10"
    assert _where(far.pk) == "metering_usageevent_default"


@pytest.mark.django_db
def test_creating_a_month_moves_its_rows_out_of_the_default_partition(api_key_a, api_key_b):
    events = [record(api_key_a, at=utc(2031, 5, day)) for day in (1, 15, 31)]
    other = record(api_key_b, at=utc(2031, 6, 1))
    before = _totals()
    assert partitions.partition_create(month=dt.date(2031, 5, 1)) is True
    assert partitions.partition_create(month=dt.date(2031, 5, 1)) is False  # exists: nothing to do
    assert {_where(event.pk) for event in events} == {"metering_usageevent_p2031_05"}
    assert _where(other.pk) == "metering_usageevent_default"
    assert _totals() == before


@pytest.mark.django_db
def test_beat_creates_the_months_ingest_may_write_to_but_never_an_archived_one(settings):
    settings.USAGE_PARTITIONS_AHEAD = 2
    settings.INGEST_MAX_PAST_DAYS = 40
    archive.UsageArchive.objects.create(
        period=dt.date(2035, 2, 1), status="dropped", file_name="x", sha256="", rows=0, file_bytes=0,
        table_bytes=0, manifest={},
    )  # fmt: skip
    created = archive.usage_partitions_ensure(now=utc(2035, 3, 10))
    # From the month of now - 40 days (January) to two months ahead; February was archived.
    assert created == [dt.date(2035, 1, 1), dt.date(2035, 3, 1), dt.date(2035, 4, 1), dt.date(2035, 5, 1)]
    assert archive.usage_partitions_ensure(now=utc(2035, 3, 10)) == []


@pytest.mark.django_db
def test_a_replay_moved_to_another_month_is_a_conflict_never_a_second_row(key_a, tenant_a, any_past_timestamp):
    body = EventBodyFactory(request_id="moved", timestamp="2026-10-15T12:00:00Z")
    first = key_a.post("/api/v1/events", body)
    assert first.status_code == 201, first.content
    moved = key_a.post("/api/v1/events", {**body, "timestamp": "2026-11-15T12:00:00Z"})
    assert moved.status_code == 409
    assert moved.json()["error"]["code"] == "request_id_conflict"
    again = key_a.post("/api/v1/events", body)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["id"] == first.json()["id"]
    assert UsageEvent.objects.filter(tenant=tenant_a, request_id="moved").count() == 1
    assert UsageRequest.objects.get(tenant_id=tenant_a.pk, request_id="moved").event_id == first.json()["id"]


@pytest.mark.django_db
def test_a_batch_replayed_across_months_stores_each_request_once(key_a, tenant_a, any_past_timestamp):
    bodies = [EventBodyFactory(timestamp=f"2026-{month:02d}-10T00:00:00Z") for month in (9, 10, 11)]
    assert key_a.post("/api/v1/events/batch", {"events": bodies}).status_code == 200
    shifted = [{**body, "timestamp": "2026-12-01T00:00:00Z"} for body in bodies]
    results = key_a.post("/api/v1/events/batch", {"events": shifted + bodies}).json()["results"]
    assert [r["status"] for r in results] == ["rejected"] * 3 + ["duplicate"] * 3
    assert UsageEvent.objects.filter(tenant=tenant_a).count() == 3


@pytest.mark.django_db(transaction=True)
def test_the_conversion_keeps_every_row_and_every_key(plan):
    """Run the migration backwards (one plain table) and forwards again with rows in place."""
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("metering")
    executor.migrate([("metering", "0006_usage_event_long_context")])
    try:
        assert not partitions.is_partitioned()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO metering_usageevent (tenant_id, api_key_id, request_id, model, input_tokens, "
                "output_tokens, cached_input_tokens, cache_write_tokens, occurred_at, received_at, metadata, "
                "token_source, encoding, cost, currency, body_hash, flags, long_context) "
                "SELECT 1 + g % 7, 1, 'r-' || g, 'gpt-4o', g, 2 * g, 0, 0, "
                "timestamptz '2026-12-01' - g * interval '37 minutes', now(), "
                "jsonb_build_object('note', 'quote \" back \\ é ' || g), "
                "'reported', '', CASE WHEN g % 10 = 0 THEN NULL ELSE g * 0.000001 END, 'USD', md5(g::text), '', "
                "false FROM generate_series(1, 30000) g"
            )
        before = _totals()
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
    assert partitions.is_partitioned()
    assert _totals() == before
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM metering_usagerequest k JOIN metering_usageevent e "
            "ON e.id = k.event_id AND e.tenant_id = k.tenant_id AND e.request_id = k.request_id "
            "AND e.body_hash = k.body_hash"
        )
        assert cursor.fetchone()[0] == 30000
        cursor.execute("SELECT count(DISTINCT tableoid) FROM metering_usageevent")
        assert cursor.fetchone()[0] > 2  # spread over month partitions
        # New ids continue after the copied ones.
        cursor.execute("SELECT nextval(pg_get_serial_sequence('metering_usageevent', 'id'))")
        assert cursor.fetchone()[0] > 30000
