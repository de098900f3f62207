"""The portal in a real browser: login, charts with data, keys, language, roles, operators."""

import json
import urllib.error
import urllib.request

import pytest

from tests.browser.conftest import login
from tests.portal.web_support import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def chart_traces(page, chart_id: str) -> list[dict]:
    """The traces plotly.js drew into a chart div (its `data`, as plotly keeps it)."""
    return page.evaluate(
        """(id) => (document.getElementById(id).data || []).map(t => ({
            name: t.name, meta: t.meta, type: t.type, x: t.x, y: t.y, value: t.value}))""",
        chart_id,
    )


def test_login_and_dashboard_charts_carry_the_data(page, tenant_a, owner_a, usage_a):
    login(page, "owner@acme.test", PASSWORD)
    assert page.url.endswith(f"/t/{tenant_a.slug}/")
    page.click("a[data-range='7']")
    page.wait_for_selector("html[data-charts-ready='true']")
    page.wait_for_selector("#chart-daily-tokens .main-svg")
    tokens = {t["meta"]: t for t in chart_traces(page, "chart-daily-tokens")}
    assert set(tokens) == {"input", "cached", "output"}
    assert all(t["type"] == "bar" for t in tokens.values())
    assert sum(tokens["cached"]["y"]) == usage_a["cached_input_tokens"]
    assert sum(tokens["output"]["y"]) == usage_a["output_tokens"]
    assert sum(tokens["input"]["y"]) == usage_a["input_tokens"] - usage_a["cached_input_tokens"]
    requests = chart_traces(page, "chart-daily-requests")[0]
    assert sum(requests["y"]) == usage_a["requests"]
    cost = chart_traces(page, "chart-daily-cost")[0]
    assert sum(cost["y"]) == pytest.approx(float(usage_a["cost"]))
    models = {t["meta"]: t for t in chart_traces(page, "chart-top-models")}
    assert set(models["tokens"]["y"]) == {"gpt-4o", "gpt-4o-mini"}
    # Bars were drawn: one SVG rect-ish path per non-empty bar.
    assert page.locator("#chart-daily-tokens .bars .point").count() > 0
    assert "9" in page.inner_text("#kpi-requests")
    # plotly.js came from our own static files.
    sources = page.evaluate("Array.from(document.scripts).map(s => s.src).filter(Boolean)")
    assert any("/static/vendor/plotly.min" in src for src in sources)
    assert all(src.startswith(page.base) for src in sources)


def test_create_a_key_see_it_once_revoke_it_and_the_api_refuses_it(page, tenant_a, admin_a):
    login(page, "admin@acme.test", PASSWORD)
    page.click("nav.mainnav >> text=API keys")
    page.click("#new-key")
    page.fill("input[name=name]", "browser key")
    page.click("#create-key")
    secret = page.inner_text("#new-secret").strip()
    assert secret.startswith("tbk_")
    page.click("#copy-secret")
    page.wait_for_function("document.querySelector('#copy-secret').textContent === 'Copied'")
    page.screenshot(path="test-output/screenshots/key_created_once.png")

    def call_api() -> int:
        body = json.dumps({"request_id": "browser-1", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5})
        req = urllib.request.Request(
            page.base + "/api/v1/events",
            data=body.encode(),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert call_api() == 201
    page.click("text=I have saved it")
    assert secret not in page.content()  # shown once, never again
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#revoke-key")
    page.wait_for_selector(".message-success")
    assert "revoked" in page.inner_text("h1")
    assert call_api() == 403


def test_rename_a_key_and_take_away_its_ingest_scope(page, tenant_a, owner_a, key_a):
    login(page, "owner@acme.test", PASSWORD)
    page.goto(page.base + f"/t/{tenant_a.slug}/keys/{key_a.row.pk}/")
    page.fill("#key-edit-form input[name=name]", "read-only dashboards")
    page.uncheck("#key-edit-form input[value=ingest]")
    page.click("#key-save")
    page.wait_for_selector(".message-success")
    assert "read-only dashboards" in page.inner_text("h1")
    assert page.is_checked("#key-edit-form input[value=read]")
    assert not page.is_checked("#key-edit-form input[value=ingest]")
    page.screenshot(path="test-output/screenshots/key_edited.png")
    key_a.row.refresh_from_db()
    assert key_a.row.scopes == ["read"]


def test_switch_to_chinese(page, tenant_a, owner_a, usage_a):
    login(page, "owner@acme.test", PASSWORD)
    page.select_option("#language-select", "zh-hans")
    page.wait_for_selector("html[lang='zh-hans']")
    page.wait_for_selector("html[data-charts-ready='true']")
    nav = page.inner_text("nav.mainnav")
    assert "仪表盘" in nav and "用量" in nav and "账单" in nav
    assert "余额" in page.inner_text("#kpi-balance")
    legend = [t["name"] for t in chart_traces(page, "chart-daily-tokens")]
    assert legend == ["输入", "缓存输入", "输出"]
    # The CJK font is installed: the heading is drawn with glyphs, not tofu boxes.
    widths = page.evaluate(
        """() => { const c = document.createElement('canvas').getContext('2d');
        c.font = '16px "WenQuanYi Micro Hei"'; const a = c.measureText('仪表盘').width;
        c.font = '16px monospace'; return [a, c.measureText('仪表盘').width]; }"""
    )
    assert widths[0] > 0


def test_a_viewer_cannot_reach_the_keys_page(page, tenant_a, viewer_a):
    login(page, "viewer@acme.test", PASSWORD)
    assert page.locator("nav.mainnav >> text=API keys").count() == 0
    response = page.goto(page.base + f"/t/{tenant_a.slug}/keys/")
    assert response.status == 403
    assert "Not allowed" in page.inner_text("#forbidden")


def test_staff_see_all_tenants(page, tenant_a, tenant_b, operator, usage_a):
    login(page, "ops@platform.test", PASSWORD)
    assert page.url.endswith("/ops/")
    rows = page.locator("#tenants tbody tr")
    slugs = sorted(rows.nth(i).get_attribute("data-tenant") for i in range(rows.count()))
    assert slugs == sorted([tenant_a.slug, tenant_b.slug])
    page.wait_for_selector("#chart-top-tenants-tokens .main-svg")
    top = chart_traces(page, "chart-top-tenants-tokens")[0]
    assert top["y"] == [tenant_a.name]
    assert top["x"] == [usage_a["input_tokens"] + usage_a["output_tokens"]]


def test_add_an_alert_rule(page, tenant_a, owner_a):
    login(page, "owner@acme.test", PASSWORD)
    page.click("nav.mainnav >> text=Alerts")
    page.click("#new-channel")
    page.select_option("select[name=kind]", "email")
    assert page.is_hidden("input[name=url]")  # only the email fields show
    page.fill("input[name=name]", "finance inbox")
    page.fill("input[name=recipients]", "cfo@acme.test")
    page.click("#save-channel")
    page.wait_for_selector("#channels >> text=finance inbox")
    page.click("#new-rule")
    page.select_option("select[name=kind]", "spend")
    page.fill("input[name=name]", "monthly budget")
    page.fill("input[name=amount]", "250")
    page.fill("input[name=thresholds]", "50, 80, 100")
    page.check("#rule-form input[name=channels]")
    page.click("#save-rule")
    page.wait_for_selector(".message-success")
    row = page.inner_text("#rules tbody tr")
    assert "monthly budget" in row and "250.00 USD" in row and "finance inbox" in row
    assert [b.strip() for b in page.locator("#rules tbody tr .badge-info").all_inner_texts()] == ["50%", "80%", "100%"]

    # Edit it: the form comes back filled in, with only the spend fields showing.
    page.click("#rules [data-edit-rule]")
    assert page.input_value("input[name=thresholds]") == "50, 80, 100"
    assert page.is_disabled("select[name=kind]")
    assert page.is_visible("input[name=amount]") and page.is_hidden("select[name=quota]")
    page.fill("input[name=amount]", "400")
    page.fill("input[name=thresholds]", "90")
    page.click("#save-rule")
    page.wait_for_selector(".message-success")
    assert "400.00 USD" in page.inner_text("#rules tbody tr")
    assert [b.strip() for b in page.locator("#rules tbody tr .badge-info").all_inner_texts()] == ["90%"]


def test_an_operator_issues_a_credit_note(page, tenant_a, operator, key_a):
    from tests.invoicing.helpers import record, utc  # noqa: PLC0415 - invoicing's own helpers
    from tests.invoicing.test_close import close, finalize  # noqa: PLC0415

    record(key_a.row, at=utc(2026, 10, 5), input_tokens=2_000_000, output_tokens=0)
    invoice = finalize(close(tenant_a))
    login(page, "ops@platform.test", PASSWORD)
    page.click("nav.segmented >> text=Credit notes")
    page.fill("input[name=invoice]", invoice.number)
    page.fill("input[name=amount]", "1.50")
    page.fill("input[name=reason]", "outage on 5 October")
    page.click("#issue-credit-note")
    page.wait_for_selector(".message-success")
    row = page.inner_text("#credit-notes tbody tr")
    assert invoice.number in row and "1.50 USD" in row and "outage on 5 October" in row
    page.screenshot(path="test-output/screenshots/credit_note_issued.png")
