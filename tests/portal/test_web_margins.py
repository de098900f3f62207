"""The operators' margins page: revenue, cost and gross margin by tenant, model and month, from
the rollups; staff only."""

from decimal import Decimal

import pytest
from django.urls import reverse

from tests import factories
from tests.billing.test_resale import _catalog_plan, _cny_plan, _post, _shop
from tests.portal.web_support import make_user, rollup

pytestmark = pytest.mark.django_db


def test_margins_by_tenant_model_and_month_never_mix_currencies(client, operator, tenant_a, key_a):
    shop = _shop(_cny_plan(_catalog_plan()))
    _post(shop, model="gpt-4o", input_tokens=10_000, cached_input_tokens=4_000, output_tokens=1_000)
    _post(shop, model="gpt-4o", input_tokens=10_000, cached_input_tokens=4_000, output_tokens=1_000)
    _post(key_a, model="gpt-4o", input_tokens=1_000_000, output_tokens=0)  # a USD plan of its own: no cost price
    rollup(shop.row.tenant)
    rollup(tenant_a)
    client.force_login(operator)
    response = client.get(reverse("ops-margins"), {"months": "1"})
    assert response.status_code == 200
    report = response.context["report"]
    totals = {row.currency: row for row in report.totals}
    # Worked example x 2: revenue 0.5694, cost 0.438 -> 0.57 - 0.44 = 0.13 CNY (rounded once each).
    cny = totals["CNY"]
    assert (cny.revenue, cny.cost, cny.margin, cny.requests) == (
        Decimal("0.57"),
        Decimal("0.44"),
        Decimal("0.13"),
        2,
    )
    assert cny.margin == cny.revenue - cny.cost
    assert cny.margin_pct == Decimal("23.08")  # of the exact sums: 1 - 1/1.3
    usd = totals["USD"]
    assert (usd.revenue, usd.cost, usd.uncosted) == (Decimal("2.50"), Decimal("0.00"), True)
    models = {(row.group, row.currency) for row in report.by_model}
    assert models == {("gpt-4o", "CNY"), ("gpt-4o", "USD")}  # the same model, never summed across currencies
    assert len(report.by_month) == 2
    assert sorted(row.group.rsplit(" ", 1)[1] for row in report.by_tenant) == ["(acme)", "(shop-cn)"]
    page = response.content.decode()
    assert 'id="margin-tenants"' in page and "23.08 %" in page and "no cost price" in page


def test_only_staff_see_margins(client, tenant_a):
    owner = make_user("owner@acme.test", tenant=tenant_a, role="owner")
    client.force_login(owner)
    assert client.get(reverse("ops-margins")).status_code in {403, 404}
    client.logout()
    assert client.get(reverse("ops-margins")).status_code == 302  # to the login page


def test_a_bad_months_parameter_falls_back_to_the_default(client, operator):
    factories.TenantFactory(slug="idle")
    client.force_login(operator)
    for value in ("abc", "-3", "999999999999999999999", "0"):
        response = client.get(reverse("ops-margins"), {"months": value})
        assert response.status_code == 200
        assert 1 <= response.context["months"] <= 24


def test_a_sell_plans_page_shows_what_its_prices_were_derived_from(client, operator):
    sell = _cny_plan(_catalog_plan())
    client.force_login(operator)
    page = client.get(reverse("ops-plan", args=[sell.pk])).content.decode()
    assert "Sold over the cost plan provider (USD)" in page
    assert "&times;1.300000" in page and "7.300000" in page
