"""GET /api/v1/usage: totals by day (in the tenant's zone), model or key; strict parameters."""

import datetime as dt
from decimal import Decimal

import pytest
from django.test import override_settings

from tests.conftest import Credential
from tests.factories import EventBodyFactory, issue_api_key

pytestmark = pytest.mark.django_db

# Events up to a month ahead of the test clock may be posted (Nov 30 is after "now" here).
AHEAD = override_settings(INGEST_MAX_FUTURE_SECONDS=400 * 86400, INGEST_MAX_PAST_DAYS=100_000)  # fixed dates


def _post(cred, when: str, **fields) -> dict:
    with AHEAD:
        response = cred.post("/api/v1/events", EventBodyFactory(timestamp=when, **fields))
    assert response.status_code == 201, response.content
    return response.json()


def _usage(cred, **params):
    response = cred.get("/api/v1/usage", params)
    assert response.status_code == 200, response.content
    return response.json()


def test_day_grouping_uses_the_tenant_timezone(key_a, key_b):
    for cred in (key_a, key_b):
        _post(cred, "2026-11-30T15:00:00Z")  # 23:00 in Shanghai
        _post(cred, "2026-11-30T17:30:00Z")  # 01:30 on Dec 1 in Shanghai
    utc = _usage(key_a, **{"from": "2026-11-01", "to": "2026-12-31", "group_by": "day"})["results"]
    assert [(row["group"], row["requests"]) for row in utc] == [("2026-11-30", 2)]
    shanghai = _usage(key_b, **{"from": "2026-11-01", "to": "2026-12-31", "group_by": "day"})["results"]
    assert [(row["group"], row["requests"]) for row in shanghai] == [("2026-11-30", 1), ("2026-12-01", 1)]


def test_date_bounds_are_tenant_local_days_with_to_included(key_b):
    _post(key_b, "2026-11-30T15:00:00Z")
    _post(key_b, "2026-11-30T17:30:00Z")
    dec_first = _usage(key_b, **{"from": "2026-12-01", "to": "2026-12-01"})
    assert [row["group"] for row in dec_first["results"]] == ["2026-12-01"]
    assert dec_first["start"] == "2026-11-30T16:00:00+00:00"
    assert dec_first["end"] == "2026-12-01T16:00:00+00:00"
    nov_30 = _usage(key_b, **{"from": "2026-11-30", "to": "2026-11-30"})
    assert [row["group"] for row in nov_30["results"]] == ["2026-11-30"]


def test_time_bounds_are_half_open(key_a):
    _post(key_a, "2026-11-01T10:00:00Z")
    at = {"from": "2026-11-01T10:00:00Z", "to": "2026-11-01T10:00:01Z"}
    assert _usage(key_a, **at)["results"][0]["requests"] == 1
    before = {"from": "2026-11-01T09:00:00Z", "to": "2026-11-01T10:00:00Z"}
    assert _usage(key_a, **before)["results"] == []
    offset = {"from": "2026-11-01T18:00:00+08:00", "to": "2026-11-01T18:00:01+08:00"}
    assert _usage(key_a, **offset)["results"][0]["requests"] == 1


def test_group_by_model_sums_tokens_and_cost(key_a):
    _post(key_a, "2026-11-02T00:00:00Z", model="gpt-4o", cached_input_tokens=400)
    _post(key_a, "2026-11-02T01:00:00Z", model="gpt-4o")
    _post(key_a, "2026-11-02T02:00:00Z", model="gpt-4o-mini", input_tokens=2000, output_tokens=100)
    _post(key_a, "2026-11-02T03:00:00Z", model="unpriced-model")
    body = _usage(key_a, **{"from": "2026-11-01", "to": "2026-11-30", "group_by": "model"})
    assert body["currency"] == "USD"
    assert body["group_by"] == "model"
    rows = {row["group"]: row for row in body["results"]}
    assert list(rows) == ["gpt-4o", "gpt-4o-mini", "unpriced-model"]
    assert rows["gpt-4o"]["requests"] == 2
    assert rows["gpt-4o"]["input_tokens"] == 2000
    assert rows["gpt-4o"]["cached_input_tokens"] == 400
    assert rows["gpt-4o"]["output_tokens"] == 1000
    assert Decimal(rows["gpt-4o"]["cost"]) == Decimal("0.007") + Decimal("0.0075")
    assert isinstance(rows["gpt-4o"]["cost"], str)
    # 2000 x 0.15 + 100 x 0.6 per 1M
    assert Decimal(rows["gpt-4o-mini"]["cost"]) == Decimal("0.00036")
    assert rows["unpriced-model"]["unpriced_requests"] == 1
    assert Decimal(rows["unpriced-model"]["cost"]) == 0


def test_group_by_api_key(key_a, tenant_a):
    second = Credential(*issue_api_key(tenant_a, name="second"))
    _post(key_a, "2026-11-02T00:00:00Z")
    _post(second, "2026-11-02T00:00:00Z")
    _post(second, "2026-11-03T00:00:00Z")
    rows = _usage(key_a, **{"from": "2026-11-01", "to": "2026-11-30", "group_by": "api_key"})["results"]
    assert {row["group"]: row["requests"] for row in rows} == {key_a.row.pk: 1, second.row.pk: 2}


def test_default_range_is_the_last_30_days(key_a):
    key_a.post("/api/v1/events", EventBodyFactory())
    _post(key_a, "2020-01-01T00:00:00Z")
    body = _usage(key_a, group_by="model")
    assert sum(row["requests"] for row in body["results"]) == 1
    start, end = dt.datetime.fromisoformat(body["start"]), dt.datetime.fromisoformat(body["end"])
    assert end - start == dt.timedelta(days=30)


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"group_by": "week"}, "invalid_field", "group_by"),
        ({"from": "yesterday"}, "invalid_field", "from"),
        ({"to": "2026/11/01"}, "invalid_field", "to"),
        ({"from": "2026-11-01T10:00:00"}, "invalid_field", "from"),
        ({"to": "2026-11-01T10:00:00"}, "invalid_field", "to"),
        ({"from": "2026-11-02", "to": "2026-11-01"}, "invalid_range", None),
        ({"from": "2026-11-01T10:00:00Z", "to": "2026-11-01T10:00:00Z"}, "invalid_range", None),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "invalid_range", None),
        ({"colour": "blue"}, "unknown_field", None),
    ],
)
def test_bad_parameters(key_a, params, code, field):
    response = key_a.get("/api/v1/usage", params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["details"] == {"field": field}
        assert field in error["message"]
