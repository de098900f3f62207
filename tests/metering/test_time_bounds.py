"""Hostile timestamps: every typed date or time is bounded, answered 400, and never stored.

An event from year 1 (or one whose offset pushes it out of what a datetime holds) once got
stored and then crashed every rollup; a usage range at 9999-12-31 answered 500. The bounds
are relative to now (INGEST_MAX_PAST_DAYS back, never before 2000-01-01), so are these tests.
"""

import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from metering.models import UsageEvent
from tests.factories import EventBodyFactory

pytestmark = pytest.mark.django_db

HOSTILE = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",  # year 0 in UTC: overflows
    "9999-12-31T23:59:59-01:00",  # year 10000 in UTC: overflows
    "1999-12-31T23:59:59Z",
]


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("timestamp", HOSTILE)
def test_an_event_outside_the_range_is_refused_naming_it(key_a, timestamp):
    response = key_a.post("/api/v1/events", EventBodyFactory(timestamp=timestamp))

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "timestamp_out_of_range"
    assert error["details"] == {"field": "timestamp"}
    earliest = (timezone.now() - dt.timedelta(days=400)).date().isoformat()
    assert "accepted range" in error["message"]
    assert earliest in error["message"]
    assert not UsageEvent.objects.exists()


def test_far_future_keeps_its_own_code_and_names_the_range(key_a):
    response = key_a.post("/api/v1/events", EventBodyFactory(timestamp="9999-12-31T23:59:59Z"))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "timestamp_in_future"
    assert "accepted range" in error["message"]


def test_the_horizon_is_INGEST_MAX_PAST_DAYS(key_a, settings):
    now = timezone.now()
    inside = key_a.post("/api/v1/events", EventBodyFactory(timestamp=_iso(now - dt.timedelta(days=399))))
    outside = key_a.post("/api/v1/events", EventBodyFactory(timestamp=_iso(now - dt.timedelta(days=401))))
    assert (inside.status_code, outside.status_code) == (201, 400)
    assert outside.json()["error"]["code"] == "timestamp_out_of_range"

    settings.INGEST_MAX_PAST_DAYS = 10
    recent = key_a.post("/api/v1/events", EventBodyFactory(timestamp=_iso(now - dt.timedelta(days=9))))
    older = key_a.post("/api/v1/events", EventBodyFactory(timestamp=_iso(now - dt.timedelta(days=11))))
    assert (recent.status_code, older.status_code) == (201, 400)


def test_never_before_2000_whatever_the_setting(key_a, settings):
    settings.INGEST_MAX_PAST_DAYS = 100_000  # back to the 18th century, if it were obeyed
    first = key_a.post("/api/v1/events", EventBodyFactory(timestamp="2000-01-01T00:00:00Z"))
    before = key_a.post("/api/v1/events", EventBodyFactory(timestamp="1999-12-31T23:59:59Z"))

    assert first.status_code == 201, first.content
    assert before.status_code == 400
    assert "2000-01-01T00:00:00Z" in before.json()["error"]["message"]


@pytest.mark.parametrize("timestamp", HOSTILE[:3])
def test_a_batch_keeps_every_valid_item(key_a, timestamp):
    now = timezone.now()
    events = [EventBodyFactory(timestamp=_iso(now - dt.timedelta(hours=n))) for n in range(4)]
    events.insert(2, EventBodyFactory(timestamp=timestamp))

    response = key_a.post("/api/v1/events/batch", {"events": events})

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (4, 1)
    rejected = [item for item in body["results"] if item["status"] == "rejected"]
    assert [(item["index"], item["error"]["code"]) for item in rejected] == [(2, "timestamp_out_of_range")]
    assert UsageEvent.objects.count() == 4


# --- Usage ranges -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"to": "9999-12-31"}, "to"),
        ({"from": "0001-01-01"}, "from"),
        ({"from": "1999-12-31", "to": "2000-01-02"}, "from"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "from"),
        ({"to": "9999-12-31T23:59:59-01:00"}, "to"),
        ({"to": "9999-12-31T23:59:59+23:59"}, "to"),
        ({"from": "0001-01-01T00:00:00-23:59", "to": "0001-01-02T00:00:00-23:59"}, "to"),
    ],
)
def test_usage_ranges_out_of_bounds_answer_400(key_b, params, field):
    response = key_b.get("/api/v1/usage", params)  # Asia/Shanghai: local midnights are UTC 16:00

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "timestamp_out_of_range"
    assert response.json()["error"]["details"] == {"field": field}


def test_usage_range_at_the_edges_still_answers(key_b):
    year_ahead = (timezone.now() + dt.timedelta(days=360)).date()
    response = key_b.get("/api/v1/usage", {"from": (year_ahead - dt.timedelta(days=30)).isoformat(), "to": year_ahead})
    assert response.status_code == 200, response.content
    response = key_b.get("/api/v1/usage", {"from": "2000-01-01", "to": "2000-12-31"})
    assert response.status_code == 200, response.content


# --- Commands -----------------------------------------------------------------------------------


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31", "1999-12-31"])
def test_rollup_date_out_of_range_is_a_command_error(day):
    with pytest.raises(CommandError, match="outside the accepted range"):
        call_command("rollup", "--date", day, stdout=io.StringIO())


@override_settings(INGEST_MAX_PAST_DAYS=100)
def test_rollup_date_within_range_runs(key_a):
    call_command("rollup", "--date", "2000-01-01", stdout=io.StringIO())
