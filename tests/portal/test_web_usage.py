"""The usage explorer: filters, keyset pages (no COUNT over events), CSV of exactly the filter."""

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey
from tests import factories
from tests.portal.web_support import event, record

pytestmark = pytest.mark.django_db


@pytest.fixture
def many_events(tenant_a, key_a):
    """120 events over the last two days, two models, one per minute (newest first by time)."""
    now = timezone.now() - dt.timedelta(minutes=1)
    events = [
        event(f"m-{n:03d}", now - dt.timedelta(minutes=n * 20), model="gpt-4o" if n % 3 else "gpt-4o-mini")
        for n in range(120)
    ]
    record(key_a.row, events)
    return events


def rows_of(client, url, params) -> list[str]:
    """Walk every page; return the request ids in display order."""
    seen, params = [], dict(params)
    for _ in range(100):
        response = client.get(url, params)
        assert response.status_code == 200
        seen.extend(row["request_id"] for row in response.context["rows"])
        cursor = response.context["next_cursor"]
        if not cursor:
            return seen
        params["after"] = cursor
    raise AssertionError("pagination did not end")


def test_pages_cover_every_event_once_newest_first(client, tenant_a, owner_a, many_events):
    client.force_login(owner_a)
    url = reverse("usage", kwargs={"slug": tenant_a.slug})
    seen = rows_of(client, url, {"range": "7"})
    assert seen == [e["request_id"] for e in many_events]


def test_filters_by_model_and_key(client, tenant_a, owner_a, key_a, many_events):
    other, _ = factories.issue_api_key(tenant_a, name="other")
    record(other, [event("other-1", timezone.now() - dt.timedelta(minutes=5))])
    client.force_login(owner_a)
    url = reverse("usage", kwargs={"slug": tenant_a.slug})
    minis = rows_of(client, url, {"range": "7", "model": "gpt-4o-mini"})
    assert minis == [e["request_id"] for e in many_events if e["model"] == "gpt-4o-mini"]
    assert rows_of(client, url, {"range": "7", "key": other.pk}) == ["other-1"]
    assert "other-1" not in rows_of(client, url, {"range": "7", "key": key_a.row.pk})


def test_date_range_is_in_the_tenants_days(client, tenant_a, owner_a, many_events):
    client.force_login(owner_a)
    url = reverse("usage", kwargs={"slug": tenant_a.slug})
    today = timezone.now().date()  # tenant_a is UTC
    only_today = rows_of(client, url, {"range": "custom", "start": today.isoformat(), "end": today.isoformat()})
    expected = [e["request_id"] for e in many_events if dt.datetime.fromisoformat(e["timestamp"]).date() == today]
    assert only_today == expected


def test_explorer_never_counts_events(client, tenant_a, owner_a, many_events):
    client.force_login(owner_a)
    with CaptureQueriesContext(connection) as queries:
        client.get(reverse("usage", kwargs={"slug": tenant_a.slug}), {"range": "90"})
    event_queries = [q["sql"] for q in queries.captured_queries if "metering_usageevent" in q["sql"]]
    assert len(event_queries) == 1
    assert "COUNT(" not in event_queries[0].upper()
    assert "LIMIT 51" in event_queries[0].upper()


def test_bad_cursor_is_ignored(client, tenant_a, owner_a, many_events):
    client.force_login(owner_a)
    response = client.get(reverse("usage", kwargs={"slug": tenant_a.slug}), {"after": "x.y"})
    assert response.status_code == 200
    assert response.context["rows"][0]["request_id"] == "m-000"


def test_csv_is_exactly_the_filter_streamed(client, tenant_a, owner_a, many_events):
    client.force_login(owner_a)
    params = {"range": "7", "model": "gpt-4o-mini"}
    response = client.get(reverse("usage-csv", kwargs={"slug": tenant_a.slug}), params)
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    explorer = rows_of(client, reverse("usage", kwargs={"slug": tenant_a.slug}), params)
    assert [r["request_id"] for r in rows] == explorer  # every page, same order
    assert {r["model"] for r in rows} == {"gpt-4o-mini"}
    first = rows[0]
    assert first["api_key"] == "test"
    assert first["input_tokens"] == "1000" and first["output_tokens"] == "500"
    # 1000 x 0.15 + 500 x 0.6 per 1M
    assert first["cost"].rstrip("0") == "0.00045"
    assert dt.datetime.fromisoformat(first["occurred_at"]).utcoffset() == dt.timedelta(0)


def test_csv_times_are_in_the_tenants_zone(client, tenant_b, owner_b, key_b):
    record(key_b.row, [event("sh-1", timezone.now() - dt.timedelta(minutes=3))])
    client.force_login(owner_b)
    body = b"".join(client.get(reverse("usage-csv", kwargs={"slug": tenant_b.slug})).streaming_content).decode()
    row = next(csv.DictReader(io.StringIO(body)))
    assert dt.datetime.fromisoformat(row["occurred_at"]).utcoffset() == dt.timedelta(hours=8)


FORMULA_NAMES = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_csv_neutralises_formula_key_names_and_request_ids(client, tenant_a, owner_a):
    """Key names and request ids are the tenant's text: a spreadsheet must show, not run, them."""
    when = timezone.now() - dt.timedelta(minutes=5)
    for n, name in enumerate(FORMULA_NAMES):
        key, _ = factories.issue_api_key(tenant_a, name="placeholder")
        ApiKey.objects.filter(pk=key.pk).update(name=name)  # stored as given (the form would strip \t)
        record(key, [event(f"@req-{n}", when - dt.timedelta(seconds=n)), event(f"plain-{n}", when)])
    client.force_login(owner_a)
    response = client.get(reverse("usage-csv", kwargs={"slug": tenant_a.slug}))
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    by_request = {row["request_id"]: row for row in rows}
    for n, name in enumerate(FORMULA_NAMES):
        assert by_request[f"'@req-{n}"]["api_key"] == "'" + name
        assert by_request[f"plain-{n}"]["api_key"] == "'" + name
    for row in rows:  # numbers stay numbers
        assert int(row["input_tokens"]) == 1000
        assert Decimal(row["cost"]) > 0 and not row["cost"].startswith("'")
