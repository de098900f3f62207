"""The Prices page in a real browser: reached from the navigation, per 1K and 1M, by tier."""

import datetime as dt

import pytest

from tests import factories
from tests.browser.conftest import login
from tests.portal.web_support import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_a_member_reads_the_prices_by_kind_and_tier(page, tenant_a, viewer_a, plan):
    common = {"plan": plan, "model_pattern": "tiered-1", "effective_from": T0}
    factories.PriceFactory(
        **common, input_per_mtok="2.5", output_per_mtok="15", cached_input_per_mtok="0.25", tier_threshold=272_000,
        tier_input_per_mtok="5", max_input_tokens=1_050_000,
    )  # fmt: skip
    factories.PriceFactory(**common, service_tier="priority", input_per_mtok="5", output_per_mtok="30")
    login(page, "viewer@acme.test", PASSWORD)
    page.click("nav.mainnav >> text=Prices")
    page.wait_for_selector("h1:has-text('Prices')")
    default = page.locator("section.price[data-model='tiered-1'][data-tier='default']")
    row = default.locator("tr[data-kind='input']").inner_text()
    assert "0.0025" in row and "2.5" in row and "5" in row  # per 1K, per 1M, above 272,000
    assert "above 272,000 input tokens" in default.inner_text().lower()
    assert "1,050,000" in default.inner_text()
    priority = page.locator("section.price[data-model='tiered-1'][data-tier='priority']")
    assert "priority" in priority.inner_text()
    assert "0.03" in priority.locator("tr[data-kind='output']").inner_text()
    assert "reasoning" in priority.inner_text().lower()
