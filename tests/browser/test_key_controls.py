"""A key's limits and allowed models, set in a real browser."""

import pytest

from tests.browser.conftest import login
from tests.portal.web_support import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_owner_limits_a_key_and_sees_it_on_the_key_page(page, tenant_a, owner_a, key_a):
    login(page, "owner@acme.test", PASSWORD)
    page.click("nav.mainnav >> text=API keys")
    page.click(f"#keys tr[data-key-id='{key_a.row.pk}'] a")
    assert page.inner_text("#key-rpm").strip() == "no limit"
    page.fill("#key-controls-form input[name=rpm_limit]", "600")
    page.fill("#key-controls-form textarea[name=allowed_models]", "gpt-4o\ngpt-4o-mini*\ngpt-4o")
    page.click("#key-controls-save")
    page.wait_for_selector(".message-success")
    assert page.inner_text("#key-rpm").strip() == "600"
    assert page.locator("#key-models .badge").all_inner_texts() == ["gpt-4o", "gpt-4o-mini*"]
    # The form comes back with the saved values, the duplicate dropped.
    assert page.input_value("#key-controls-form input[name=rpm_limit]") == "600"
    assert page.input_value("#key-controls-form textarea[name=allowed_models]") == "gpt-4o\ngpt-4o-mini*"
    page.screenshot(path="test-output/screenshots/key_limits_set.png")
    # A refused value comes back beside its field; the saved ones stay.
    page.fill("#key-controls-form input[name=rpm_limit]", "")
    page.fill("#key-controls-form textarea[name=allowed_networks]", "10.0.0.0/33")
    page.click("#key-controls-save")
    page.wait_for_selector("#key-controls-form .errorlist")
    assert "10.0.0.0/33" in page.inner_text("#key-controls-form .errorlist")
    assert page.inner_text("#key-rpm").strip() == "600"
    # The keys list shows them too.
    page.click("nav.mainnav >> text=API keys")
    row = page.inner_text(f"#keys tr[data-key-id='{key_a.row.pk}']")
    assert "600 RPM" in row and "2 models" in row
    key_a.row.refresh_from_db()
    assert (key_a.row.rpm_limit, key_a.row.allowed_models) == (600, ["gpt-4o", "gpt-4o-mini*"])
