"""GET /api/v1/prices and the portal's Prices page: what a tenant pays, by kind and tier."""

import datetime as dt
from decimal import Decimal

import pytest
from django.test import Client

from tests import factories

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
def priced(plan, tenant_a):
    """gpt-4o of the conftest plan, plus a tiered model with a priority row and a later version."""
    common = {"plan": plan, "model_pattern": "tiered-1"}
    factories.PriceFactory(
        **common, effective_from=T0, input_per_mtok="2.5", output_per_mtok="15", cached_input_per_mtok="0.25",
        tier_threshold=272_000, tier_input_per_mtok="5", max_input_tokens=1_050_000,
    )  # fmt: skip
    factories.PriceFactory(
        **common, effective_from=T0, service_tier="priority", input_per_mtok="5", output_per_mtok="30"
    )
    factories.PriceFactory(**common, effective_from=T1, input_per_mtok="3", output_per_mtok="15")
    # Another tenant's override never shows; this tenant's replaces the plan's gpt-4o.
    other = factories.TenantFactory(price_plan=plan)
    factories.PriceFactory(plan=plan, tenant=other, model_pattern="gpt-4o", input_per_mtok="0.01", effective_from=T0)
    factories.PriceFactory(plan=plan, tenant=tenant_a, model_pattern="gpt-4o", input_per_mtok="2", effective_from=T0)
    return plan


def by_model(body):
    return {(row["model"], row["service_tier"]): row for row in body["prices"]}


def test_prices_now_and_at_a_past_time(key_a, priced):
    response = key_a.get("/api/v1/prices")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["plan"], body["currency"]) == ("standard", "USD")
    rows = by_model(body)
    # Now: the March version, which has no priority row (priority then pays the default's).
    assert ("tiered-1", "priority") not in rows
    assert rows[("tiered-1", "default")]["per_1m"]["input"] == "3.000000000000"
    assert rows[("gpt-4o", "default")]["override"] is True
    assert Decimal(rows[("gpt-4o", "default")]["per_1m"]["input"]) == Decimal("2")
    # No cache rate of its own: cached input costs the input rate, 2 per 1M = 0.002 per 1K.
    assert Decimal(rows[("gpt-4o", "default")]["per_1k"]["cached_input"]) == Decimal("0.002")
    assert set(rows[("gpt-4o", "default")]["per_1m"]) == {
        "input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning",
    }  # fmt: skip

    february = by_model(key_a.get("/api/v1/prices", {"at": "2026-02-01T00:00:00Z"}).json())
    default, priority = february[("tiered-1", "default")], february[("tiered-1", "priority")]
    assert default["context_tier"]["above_input_tokens"] == 272_000
    assert Decimal(default["context_tier"]["per_1m"]["input"]) == Decimal("5")
    # A tier rate left empty is the base rate of its kind; a missing cache rate the input rate.
    assert Decimal(default["context_tier"]["per_1m"]["output"]) == Decimal("15")
    assert Decimal(default["per_1m"]["cache_write"]) == Decimal("2.5")
    assert default["max_input_tokens"] == 1_050_000
    assert Decimal(priority["per_1m"]["output"]) == Decimal("30")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"at": "2026-02-01"}, "at"),  # a date, not a time
        ({"at": "2026-02-01T00:00:00"}, "at"),  # no zone
        ({"at": "1999-12-31T23:59:59Z"}, "at"),  # before the earliest time
        ({"at": "9999-01-01T00:00:00Z"}, "at"),  # too far ahead
        ({"at": "=cmd|' /C calc'!A0"}, "at"),
    ],
)
def test_a_bad_time_is_refused_naming_the_field(key_a, priced, params, field):
    response = key_a.get("/api/v1/prices", params)
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == field


def test_unknown_parameters_are_refused(key_a, priced):
    response = key_a.get("/api/v1/prices", {"currency": "EUR"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_field"


def test_the_prices_need_a_credential(anonymous, priced):
    assert anonymous.get("/api/v1/prices").status_code == 401


def test_the_schema_documents_the_prices_and_the_new_fields(key_a):
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    text = schema.content.decode()
    assert "/api/v1/prices" in text
    assert "service_tier" in text and "reasoning_tokens" in text and "cache_write_1h_tokens" in text


def test_the_portal_page_lists_prices_per_1k_and_1m(client, tenant_a, owner_a, priced):
    client.force_login(owner_a)
    page = client.get(f"/t/{tenant_a.slug}/prices/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-model="tiered-1"' in html and "your price" in html
    assert ">0.003<" in html and ">3<" in html  # tiered-1 input now: 3 per 1M, 0.003 per 1K
    assert f'href="/t/{tenant_a.slug}/prices/"' in html  # linked in the navigation


def test_another_tenants_prices_page_is_not_reachable(client, tenant_b, owner_a, priced):
    client.force_login(owner_a)
    assert client.get(f"/t/{tenant_b.slug}/prices/").status_code in (403, 404)
