"""The dashboard: figures from the rollups, in the tenant's days and currency; ranges; quotas."""

import datetime as dt
import json
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.services.quotas import quota_create
from portal.web.ranges import today_for
from tests import factories
from tests.portal.web_support import event, record, rollup

pytestmark = pytest.mark.django_db


def charts_of(response) -> dict:
    content = response.content.decode()
    start = content.index('<script id="charts" type="application/json">') + len(
        '<script id="charts" type="application/json">'
    )
    return json.loads(content[start : content.index("</script>", start)])


def trace(figure: dict, meta: str) -> dict:
    return next(t for t in figure["data"] if t.get("meta") == meta)


def test_dashboard_shows_the_rolled_up_figures(client, tenant_a, owner_a, usage_a):
    factories.topup(tenant_a, "100")
    client.force_login(owner_a)
    response = client.get(reverse("dashboard", kwargs={"slug": tenant_a.slug}), {"range": "7"})
    assert response.status_code == 200
    board = response.context["board"]
    assert board.totals["requests"] == usage_a["requests"]
    assert board.totals["input_tokens"] == usage_a["input_tokens"]
    assert board.totals["output_tokens"] == usage_a["output_tokens"]
    assert board.totals["cost"] == usage_a["cost"]
    assert board.avg_tokens_per_request == (usage_a["input_tokens"] + usage_a["output_tokens"]) // 9

    figures = charts_of(response)
    tokens = figures["daily-tokens"]
    assert len(tokens["data"][0]["x"]) == 7
    today = today_for(tenant_a.timezone).isoformat()
    assert tokens["data"][0]["x"][-1] == today
    # Today: 1 gpt-4o request (800 uncached + 200 cached in, 500 out) + 1 mini (2000 in, 1000 out).
    assert trace(tokens, "input")["y"][-1] == 800 + 2000
    assert trace(tokens, "cached")["y"][-1] == 200
    assert trace(tokens, "output")["y"][-1] == 500 + 1000
    assert sum(trace(tokens, "cached")["y"]) == usage_a["cached_input_tokens"]
    assert sum(figures["daily-requests"]["data"][0]["y"]) == 9
    assert sum(Decimal(str(v)) for v in figures["daily-cost"]["data"][0]["y"]) == usage_a["cost"]
    # Top models by tokens: gpt-4o-mini (9000) above gpt-4o (9000)? Ties sort by name; by cost gpt-4o wins.
    top_models = figures["top-models"]
    assert set(trace(top_models, "tokens")["y"]) == {"gpt-4o", "gpt-4o-mini"}
    assert trace(top_models, "cost")["y"][-1] == "gpt-4o"  # largest bar drawn last (on top)
    top_keys = figures["top-keys"]
    assert set(trace(top_keys, "tokens")["y"]) == {"test", "batch jobs"}

    page = response.content.decode()
    assert "99.95" in page  # 100 - 0.0462 charged at ingest, in the currency's minor unit
    assert "vendor/plotly" in page and "cdn" not in page.lower()


def test_balance_forecast(client, tenant_a, owner_a, usage_a):
    factories.topup(tenant_a, "1")
    client.force_login(owner_a)
    board = client.get(reverse("dashboard", kwargs={"slug": tenant_a.slug})).context["board"]
    # Ingest charged the usage to the wallet: balance = 1 - cost.
    assert board.balance == Decimal(1) - usage_a["cost"]
    assert board.daily_spend == usage_a["cost"] / 7
    assert board.days_left == int(board.balance / board.daily_spend)


def test_no_spend_means_no_forecast(client, tenant_a, owner_a):
    factories.topup(tenant_a, "5")
    client.force_login(owner_a)
    response = client.get(reverse("dashboard", kwargs={"slug": tenant_a.slug}))
    assert response.context["board"].days_left is None
    assert b"No usage in this range yet." in response.content


@pytest.mark.parametrize(("preset", "days"), [("7", 7), ("30", 30), ("90", 90), ("", 30), ("13", 30)])
def test_range_presets(client, tenant_a, owner_a, preset, days):
    client.force_login(owner_a)
    response = client.get(reverse("dashboard", kwargs={"slug": tenant_a.slug}), {"range": preset})
    assert response.context["day_range"].days == days
    assert len(charts_of(response)["daily-cost"]["data"][0]["x"]) == days


def test_custom_range(client, tenant_a, owner_a, usage_a):
    client.force_login(owner_a)
    today = today_for(tenant_a.timezone)
    yesterday = today - dt.timedelta(days=1)
    response = client.get(
        reverse("dashboard", kwargs={"slug": tenant_a.slug}),
        {"range": "custom", "start": yesterday.isoformat(), "end": yesterday.isoformat()},
    )
    board = response.context["board"]
    assert board.day_range.start == board.day_range.end == yesterday
    assert board.totals["requests"] == 2 + 1  # two gpt-4o and one mini yesterday


@pytest.mark.parametrize(
    "query",
    [
        {"range": "custom", "start": "2026-02-10", "end": "2026-02-01"},
        {"range": "custom", "start": "2020-01-01", "end": "2026-01-01"},
        {"range": "custom", "start": "not-a-date", "end": "2026-01-01"},
    ],
)
def test_bad_custom_range_falls_back_with_a_message(client, tenant_a, owner_a, query):
    client.force_login(owner_a)
    response = client.get(reverse("dashboard", kwargs={"slug": tenant_a.slug}), query)
    assert response.status_code == 200
    assert response.context["range_error"]
    assert response.context["day_range"].days == 30


def test_days_are_the_tenants_local_days(client, tenant_b, owner_b, key_b):
    """An event at 23:30 UTC is on the next day in Asia/Shanghai (UTC+8)."""
    local_today = today_for("Asia/Shanghai")
    late_evening_utc = dt.datetime.combine(local_today, dt.time(0, 30), tzinfo=dt.UTC) - dt.timedelta(hours=1)
    if late_evening_utc > timezone.now():
        late_evening_utc -= dt.timedelta(days=1)
    record(key_b.row, [event("tz-1", late_evening_utc)])
    rollup(tenant_b)
    client.force_login(owner_b)
    response = client.get(reverse("dashboard", kwargs={"slug": tenant_b.slug}), {"range": "7"})
    cost = charts_of(response)["daily-cost"]["data"][0]
    expected_day = late_evening_utc.astimezone(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
    assert cost["y"][cost["x"].index(expected_day)] > 0
    assert late_evening_utc.date().isoformat() != expected_day


def test_quota_gauges(client, tenant_a, owner_a, key_a, usage_a):
    quota_create(tenant=tenant_a, metric="tokens", window="month", limit=Decimal(100_000))
    quota_create(tenant=tenant_a, api_key=key_a.row, metric="money", window="day", limit=Decimal("0.01"))
    client.force_login(owner_a)
    response = client.get(reverse("dashboard", kwargs={"slug": tenant_a.slug}))
    gauges = response.context["board"].gauges
    assert len(gauges) == 2
    tenant_gauge, key_gauge = gauges
    month_start = today_for(tenant_a.timezone).replace(day=1)
    days_in_month = (today_for(tenant_a.timezone) - month_start).days + 1
    if days_in_month >= 3:  # all three seeded days fall in this month
        assert tenant_gauge.used == usage_a["input_tokens"] + usage_a["output_tokens"]
    assert key_gauge.used == Decimal("0.00725")  # today's one gpt-4o request on key_a
    figures = charts_of(response)
    assert figures["quota-1"]["data"][0]["type"] == "indicator"
    assert figures["quota-1"]["data"][0]["value"] == pytest.approx(0.00725)


def test_dashboard_reads_rollups_not_events(client, tenant_a, owner_a, usage_a):
    client.force_login(owner_a)
    url = reverse("dashboard", kwargs={"slug": tenant_a.slug})
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url, {"range": "90"}).status_code == 200
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "metering_usageevent" not in sql
    assert len(queries.captured_queries) <= 15, [q["sql"] for q in queries.captured_queries]
