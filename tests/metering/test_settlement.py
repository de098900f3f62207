"""Ingest charges, settles holds and counts quotas per tenant batch, never per event.

Also the quota windows (tenant-local days and months) and GET /api/v1/balance.
"""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from billing.models import Hold, LedgerEntry, QuotaCounter
from billing.selectors import quota_usage
from billing.services.quotas import quota_create
from billing.services.reconcile import balances_reconcile
from metering.models import UsageEvent
from metering.services.ingest import usage_record_batch
from tests import factories
from tests.conftest import Credential

pytestmark = pytest.mark.django_db


def _hold(cred, request_id: str) -> None:
    body = {"model": "gpt-4o", "estimated_input_tokens": 1000, "max_output_tokens": 500}
    response = cred.post("/api/v1/authorize", {**body, "hold": True, "request_id": request_id})
    assert response.status_code == 200, response.content


def _statements(queries: list[dict]) -> dict[str, int]:
    """How many statements touched each billing table, wrote anything, or took the balance lock."""
    counts: dict[str, int] = {}
    for query in queries:
        sql = query["sql"]
        if "pg_advisory_xact_lock" in sql:
            counts["lock"] = counts.get("lock", 0) + 1
        if re.search(r"\b(INSERT|UPDATE|DELETE)\b", sql):
            counts["writes"] = counts.get("writes", 0) + 1
        for table in set(re.findall(r"billing_(hold|ledgerentry|wallet|quotacounter)\b", sql)):
            counts[table] = counts.get(table, 0) + 1
    return counts


@pytest.mark.parametrize("size", [10, 400])
def test_settlement_costs_the_same_statements_whatever_the_batch_size(backend, key_a, tenant_a, size):
    factories.topup(tenant_a, "100.00")
    held = [f"r-{n}" for n in range(0, size, 5)]  # every fifth event has a hold
    for request_id in held:
        _hold(key_a, request_id)
    events = [
        {"request_id": f"r-{n}", "model": "gpt-4o", "input_tokens": 100 + n, "output_tokens": 50} for n in range(size)
    ]
    with CaptureQueriesContext(connection) as captured:
        result = usage_record_batch(raw_events=events, api_key=key_a.row)
    assert result.count("accepted") == size
    counts = _statements(captured.captured_queries)
    expected = {
        "writes": 2,  # the events with the claim of their holds; then money and quota cells
        "hold": 1,  # claim this batch's open holds
        "ledgerentry": 1,  # the usage charge and one release per hold
        "wallet": 1,
        "quotacounter": 1,
    }
    if backend == "redis":
        expected["lock"] = 1
    assert counts == expected
    assert LedgerEntry.objects.filter(kind="release").count() == len(held)
    assert set(Hold.objects.values_list("status", flat=True)) == {"settled"}
    if backend == "redis":
        assert balances_reconcile(tenant_id=tenant_a.pk, fix=False).clean


@pytest.mark.usefixtures("any_past_timestamp")  # fixed dates
def test_counters_follow_the_tenant_timezone(backend, key_b, tenant_b):
    factories.topup(tenant_b, "10.00")
    quota_create(tenant=tenant_b, metric="tokens", window="day", limit=Decimal(10_000), actor_label="t")
    quota_create(tenant=tenant_b, api_key=key_b.row, metric="money", window="month", limit=Decimal(1), actor_label="t")
    # 2026-01-31 17:00 UTC is already 1 February 01:00 in Shanghai.
    late_january = {"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 0, "timestamp": "2026-01-31T15:00:00Z"}
    february = {"model": "gpt-4o", "input_tokens": 3000, "output_tokens": 0, "timestamp": "2026-01-31T17:00:00Z"}
    response = key_b.post(
        "/api/v1/events/batch", {"events": [{**late_january, "request_id": "jan"}, {**february, "request_id": "feb"}]}
    )
    assert response.json()["accepted"] == 2
    cells = {
        (c.api_key_ref, c.period, c.period_start.isoformat()): (c.tokens, c.micros)
        for c in QuotaCounter.objects.filter(tenant=tenant_b)
    }
    key = key_b.row.pk
    assert cells == {
        (0, "day", "2026-01-31"): (1000, 2500),
        (0, "day", "2026-02-01"): (3000, 7500),
        (0, "month", "2026-01-01"): (1000, 2500),
        (0, "month", "2026-02-01"): (3000, 7500),
        (0, "lifetime", "1970-01-01"): (4000, 10000),
        (key, "day", "2026-01-31"): (1000, 2500),
        (key, "day", "2026-02-01"): (3000, 7500),
        (key, "month", "2026-01-01"): (1000, 2500),
        (key, "month", "2026-02-01"): (3000, 7500),
        (key, "lifetime", "1970-01-01"): (4000, 10000),
    }
    at = dt.datetime(2026, 1, 31, 18, tzinfo=dt.UTC)
    day, month = quota_usage(tenant_id=tenant_b.pk, at=at)
    assert (day.window, day.used, day.held, day.remaining) == ("day", Decimal(3000), 0, Decimal(7000))
    assert day.period_start == dt.datetime(2026, 1, 31, 16, tzinfo=dt.UTC)
    assert day.period_end == dt.datetime(2026, 2, 1, 16, tzinfo=dt.UTC)
    assert (month.window, month.api_key_id, month.used) == ("month", key, Decimal("0.0075"))
    assert month.fraction_used == Decimal("0.0075")
    assert month.as_dict()["limit"] == "1.000000" and day.as_dict()["limit"] == 10_000
    [only_tenant_wide] = quota_usage(tenant_id=tenant_b.pk, api_key_id=999_999, at=at)
    assert only_tenant_wide.quota_id == day.quota_id


def test_quota_added_mid_month_sees_the_month(backend, key_a, tenant_a):
    factories.topup(tenant_a, "10.00")
    key_a.post("/api/v1/events", {"request_id": "e", "model": "gpt-4o", "input_tokens": 900, "output_tokens": 100})
    quota_create(tenant=tenant_a, metric="tokens", window="month", limit=Decimal(1000), actor_label="t")
    [usage] = quota_usage(tenant_id=tenant_a.pk)
    assert (usage.used, usage.remaining) == (Decimal(1000), Decimal(0))
    response = key_a.post("/api/v1/authorize", {"model": "gpt-4o", "estimated_input_tokens": 1, "max_output_tokens": 0})
    assert response.status_code == 402


def test_unpriced_events_count_tokens_not_money(backend, key_a, tenant_a):
    key_a.post("/api/v1/events", {"request_id": "u", "model": "no-price", "input_tokens": 70, "output_tokens": 30})
    cell = QuotaCounter.objects.get(tenant=tenant_a, api_key_ref=0, period="lifetime")
    assert (cell.tokens, cell.micros) == (100, 0)
    assert not LedgerEntry.objects.exists()


# --- GET /api/v1/balance ---------------------------------------------------------------------------


def test_balance_endpoint(backend, key_a, tenant_a, service):
    factories.topup(tenant_a, "2.00")
    quota = quota_create(tenant=tenant_a, metric="money", window="day", limit=Decimal(5), actor_label="t")
    _hold(key_a, "open-1")
    key_a.post("/api/v1/events", {"request_id": "x", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 0})
    body = key_a.get("/api/v1/balance").json()
    assert body["tenant"] == "acme" and body["currency"] == "USD"
    assert body["balance"] == "1.99"  # 2.00 - 0.0075 held - 0.0025 spent
    assert body["held"] == "0.0075" and body["holds_count"] == 1
    [hold] = body["holds"]
    assert hold["request_id"] == "open-1" and hold["amount"] == "0.0075" and hold["estimated_tokens"] == 1500
    [state] = body["quotas"]
    assert state["id"] == quota.pk
    assert (state["used"], state["held"], state["remaining"]) == ("0.002500", "0.007500", "4.990000")
    assert service.get("/api/v1/balance", {"api_key": key_a.row.pk}).json()["balance"] == "1.99"


def test_balance_is_tenant_scoped(backend, key_a, key_b, tenant_a):
    factories.topup(tenant_a, "2.00")
    body = key_b.get("/api/v1/balance").json()
    assert body["tenant"] == "globex" and body["balance"] == "0.00" and body["holds"] == []


def test_balance_needs_read_scope_and_rejects_unknown_params(backend, tenant_a, key_a):
    writer = factories.issue_api_key(tenant_a, scopes=["ingest"])
    assert Credential(*writer).get("/api/v1/balance").status_code == 403
    assert key_a.get("/api/v1/balance", {"tenant": "globex"}).status_code == 400


def test_openapi_documents_402_and_its_headers(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    post = schema["paths"]["/api/v1/authorize"]["post"]
    payment = post["responses"]["402"]
    assert "insufficient_balance" in payment["description"] and "quota_exceeded" in payment["description"]
    assert "Retry-After" in payment["headers"]
    examples = payment["content"]["application/json"]["examples"]
    assert {"InsufficientBalance", "QuotaExceeded"} <= set(examples)
    assert {"401", "403", "422"} <= set(post["responses"])
    assert "/api/v1/balance" in schema["paths"]


def test_a_transaction_that_fails_at_commit_takes_its_mirror_back(backend, key_a, tenant_a):
    """The money writes travel with COMMIT, after Redis moved: a failure there must not leave drift."""
    factories.topup(tenant_a, "10.00")
    event = {"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100}
    assert usage_record_batch(raw_events=[{**event, "request_id": "ok"}], api_key=key_a.row).count("accepted") == 1
    check = key_a.post("/api/v1/authorize", {"model": "gpt-4o", "estimated_input_tokens": 10, "max_output_tokens": 10})
    assert check.status_code == 200  # with Redis, this seeds the tenant's hot counters
    # Make the next event's usage entry collide with an existing ledger key.
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence('metering_usageevent', 'id'))")
        next_id = cursor.fetchone()[0] + 1
    LedgerEntry.objects.create(tenant=tenant_a, kind="usage", amount=Decimal(0), idempotency_key=f"usage:{next_id}:1")

    with pytest.raises(IntegrityError):
        usage_record_batch(raw_events=[{**event, "request_id": "doomed"}], api_key=key_a.row)

    assert not UsageEvent.objects.filter(tenant=tenant_a, request_id="doomed").exists()
    assert QuotaCounter.objects.get(tenant=tenant_a, api_key_ref=0, period="lifetime").tokens == 1100
    if backend == "redis":
        assert balances_reconcile(tenant_id=tenant_a.pk, fix=False).clean
