"""What an accepted event keeps: time in UTC, metadata, latency, bounds that are still valid."""

import datetime as dt

import pytest
from django.utils import timezone

from metering.limits import EVENT_MAX_TOKENS as MAX_TOKENS
from metering.limits import MAX_REQUEST_ID_LENGTH
from metering.models import UsageEvent
from tests.factories import EventBodyFactory

pytestmark = pytest.mark.django_db


@pytest.mark.usefixtures("any_past_timestamp")  # a fixed date
def test_timestamp_with_an_offset_is_stored_in_utc(key_a):
    response = key_a.post("/api/v1/events", EventBodyFactory(timestamp="2026-11-01T08:00:00+08:00"))
    assert response.status_code == 201
    assert response.json()["timestamp"] == "2026-11-01T00:00:00+00:00"
    stored = UsageEvent.objects.get(pk=response.json()["id"])
    assert stored.occurred_at == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_timestamp_less_than_five_minutes_ahead_is_accepted(key_a):
    ahead = timezone.now() + dt.timedelta(minutes=4)
    response = key_a.post("/api/v1/events", EventBodyFactory(timestamp=ahead.isoformat()))
    assert response.status_code == 201


def test_timestamp_defaults_to_the_time_received(key_a):
    before = timezone.now()
    response = key_a.post("/api/v1/events", EventBodyFactory())
    stored = UsageEvent.objects.get(pk=response.json()["id"])
    assert before <= stored.occurred_at == stored.received_at <= timezone.now()


def test_fields_at_their_bounds_are_accepted(key_a):
    body = EventBodyFactory(
        request_id="r" * MAX_REQUEST_ID_LENGTH,
        input_tokens=MAX_TOKENS,
        output_tokens=0,
        cached_input_tokens=MAX_TOKENS // 2,
        cache_write_tokens=MAX_TOKENS // 2,
        latency_ms=0,
        metadata={f"k{i}": "v" * 512 for i in range(32)},
    )
    response = key_a.post("/api/v1/events", body)
    assert response.status_code == 201, response.content
    assert response.json()["input_tokens"] == MAX_TOKENS


def test_unicode_request_id_and_flat_metadata_round_trip(key_a):
    metadata = {"team": "搜索", "retry": 2, "cached": True, "note": None, "ratio": 0.5}
    body = EventBodyFactory(request_id="请求-🚀-1", metadata=metadata, latency_ms=850)
    first = key_a.post("/api/v1/events", body)
    assert first.status_code == 201
    assert first.json()["metadata"] == metadata
    assert first.json()["latency_ms"] == 850
    replay = key_a.post("/api/v1/events", body)
    assert replay.json()["duplicate"] is True


def test_replay_with_keys_in_another_order_is_a_duplicate(key_a):
    body = EventBodyFactory(metadata={"a": 1, "b": 2})
    first = key_a.post("/api/v1/events", body)
    reordered = dict(reversed(list({**body, "metadata": {"b": 2, "a": 1}}.items())))
    second = key_a.post("/api/v1/events", reordered)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]


def test_response_shape(key_a, tenant_a):
    response = key_a.post("/api/v1/events", EventBodyFactory(cached_input_tokens=400))
    body = response.json()
    for name in ("id", "request_id", "duplicate", "cost", "currency", "priced", "input_tokens", "output_tokens",
                 "cached_input_tokens", "cache_write_tokens", "timestamp", "received_at", "api_key_id"):  # fmt: skip
        assert name in body
    assert isinstance(body["cost"], str)  # money is a decimal string, never a float
    assert body["priced"] is True
    assert body["api_key_id"] == key_a.row.pk
