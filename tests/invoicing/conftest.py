"""Fixtures for invoicing tests (helpers.py stores events with chosen times)."""

import pytest

from tests import factories


@pytest.fixture
def api_key_a(key_a):
    return key_a.row


@pytest.fixture
def api_key_b(key_b):
    return key_b.row


@pytest.fixture
def make_tenant(plan):
    """A tenant with its own plan in `currency` and an API key: (tenant, key)."""

    def make(slug: str, *, currency: str = "USD", tz: str = "UTC", language: str = "en", prices=None):
        tenant_plan = factories.PricePlanFactory(slug=f"plan-{slug}", currency=currency)
        for model, inp, out in prices or [("gpt-4o", "2.5", "10")]:
            factories.PriceFactory(plan=tenant_plan, model_pattern=model, input_per_mtok=inp, output_per_mtok=out)
        tenant = factories.TenantFactory(
            slug=slug, price_plan=tenant_plan, currency=currency, timezone=tz, language=language
        )
        key, _ = factories.issue_api_key(tenant)
        return tenant, key

    return make
