"""Operators: all tenants with money, top tenants, plans and catalog import, top-ups, audit log."""

import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import AuditLog, Tenant
from billing import selectors as billing_selectors
from billing.models import LedgerEntry, Price
from tests import factories

pytestmark = pytest.mark.django_db


def test_all_tenants_with_balance_and_month_to_date_spend(client, operator, tenant_a, tenant_b, usage_a):
    factories.topup(tenant_b, "7.5")
    client.force_login(operator)
    response = client.get(reverse("ops-tenants"))
    assert response.status_code == 200
    rows = {row["tenant"].slug: row for row in response.context["rows"]}
    assert set(rows) == {tenant_a.slug, tenant_b.slug}
    assert rows[tenant_b.slug]["balance"] == Decimal("7.5")
    assert rows[tenant_b.slug]["mtd_cost"] is None
    assert rows[tenant_a.slug]["mtd_cost"] <= usage_a["cost"]  # the seeded days may straddle a month start
    assert rows[tenant_a.slug]["mtd_cost"] > 0
    charts = response.context["charts"]
    tokens = charts["top-tenants-tokens"]["data"][0]
    assert tokens["y"] == [tenant_a.name]
    assert tokens["x"] == [usage_a["input_tokens"] + usage_a["output_tokens"]]
    assert charts["top-tenants-cost"]["data"][0]["x"] == [pytest.approx(float(usage_a["cost"]))]
    page = response.content.decode()
    assert "7.50 USD" in page


def test_one_tenants_damaged_time_zone_does_not_take_the_page_down(client, operator, tenant_a, tenant_b):
    factories.topup(tenant_b, "7.5")
    Tenant.objects.filter(pk=tenant_a.pk).update(timezone="Mars/Olympus_Mons")  # past every validator
    client.force_login(operator)
    response = client.get(reverse("ops-tenants"))
    assert response.status_code == 200
    rows = {row["tenant"].slug: row for row in response.context["rows"]}
    assert set(rows) == {tenant_a.slug, tenant_b.slug}
    assert rows[tenant_b.slug]["balance"] == Decimal("7.5")


def test_topup_credits_once_and_is_audited(client, operator, tenant_a):
    client.force_login(operator)
    form = {"tenant": tenant_a.slug, "amount": "40.00", "reference": "INV-2026-001"}
    first = client.post(reverse("ops-topup"), form)
    assert first.status_code == 302
    second = client.post(reverse("ops-topup"), form)
    assert second.status_code == 302
    assert billing_selectors.wallet_balance(tenant_id=tenant_a.pk) == Decimal(40)
    assert LedgerEntry.objects.filter(tenant=tenant_a, kind="topup").count() == 1
    audit = AuditLog.objects.get(action="wallet.topup")
    assert audit.actor == operator
    assert audit.tenant == tenant_a
    assert audit.changes["amount"] == "40.000000"
    page = client.get(reverse("ops-topup")).content.decode()
    assert "40.000000 USD" in page  # the recent top-ups, read from the audit log


@pytest.mark.parametrize("amount", ["0", "-5", "abc"])
def test_topup_rejects_bad_amounts(client, operator, tenant_a, amount):
    client.force_login(operator)
    response = client.post(reverse("ops-topup"), {"tenant": tenant_a.slug, "amount": amount, "reference": "x"})
    assert response.status_code == 400
    assert not LedgerEntry.objects.exists()


def test_tenant_users_cannot_top_up(client, owner_a, tenant_a):
    client.force_login(owner_a)
    response = client.post(reverse("ops-topup"), {"tenant": tenant_a.slug, "amount": "1", "reference": "x"})
    assert response.status_code == 403
    assert not LedgerEntry.objects.exists()


def test_plans_and_catalog_import(client, operator, plan):
    client.force_login(operator)
    listing = client.get(reverse("ops-plans"))
    assert listing.status_code == 200
    assert plan.slug in listing.content.decode()
    catalog = {
        "acme-chat-1": {
            "litellm_provider": "acme",
            "mode": "chat",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
        }
    }
    upload = SimpleUploadedFile("catalog.json", json.dumps(catalog).encode(), content_type="application/json")
    response = client.post(reverse("ops-plan-import"), {"plan": plan.pk, "catalog": upload})
    assert response.status_code == 302, response.content
    price = Price.objects.get(plan=plan, model_pattern="acme-chat-1")
    assert price.input_per_mtok == Decimal(1)
    assert price.output_per_mtok == Decimal(2)
    detail = client.get(response["Location"])
    assert "acme-chat-1" in detail.content.decode()
    audit = AuditLog.objects.get(action="price.import")
    assert audit.actor_label == str(operator)


def test_catalog_import_rejects_garbage(client, operator, plan):
    client.force_login(operator)
    upload = SimpleUploadedFile("catalog.json", b"{not json", content_type="application/json")
    response = client.post(reverse("ops-plan-import"), {"plan": plan.pk, "catalog": upload})
    assert response.status_code == 400
    assert not Price.objects.filter(plan=plan, source="litellm catalog").exists()


def test_unknown_plan_is_404(client, operator):
    client.force_login(operator)
    assert client.get(reverse("ops-plan", kwargs={"plan_id": 999999})).status_code == 404


def test_audit_log_lists_and_filters(client, operator, owner_a, tenant_a, tenant_b):
    factories.issue_api_key(tenant_b, name="b key")
    client.force_login(owner_a)
    client.post(reverse("key-create", kwargs={"slug": tenant_a.slug}), {"name": "a key", "scopes": ["read"]})
    client.force_login(operator)
    everything = client.get(reverse("ops-audit"))
    actions = [(e.action, e.tenant_id) for e in everything.context["entries"]]
    assert ("api_key.create", tenant_a.pk) in actions
    assert ("api_key.create", tenant_b.pk) in actions
    only_a = client.get(reverse("ops-audit"), {"tenant": tenant_a.slug, "action": "api_key."})
    entries = only_a.context["entries"]
    assert entries and all(e.tenant_id == tenant_a.pk and e.action.startswith("api_key.") for e in entries)
    created = next(e for e in entries if e.action == "api_key.create")
    assert created.actor == owner_a  # who
    assert created.changes["name"] == "a key"  # what
    assert created.created_at is not None  # when
    assert str(owner_a) in only_a.content.decode()
    assert client.get(reverse("ops-audit"), {"tenant": "nope"}).status_code == 404


def test_topup_reference_reused_with_another_amount_is_refused(client, operator, tenant_a):
    client.force_login(operator)
    client.post(reverse("ops-topup"), {"tenant": tenant_a.slug, "amount": "5", "reference": "dup"})
    response = client.post(reverse("ops-topup"), {"tenant": tenant_a.slug, "amount": "6", "reference": "dup"})
    assert response.status_code == 400
    assert billing_selectors.wallet_balance(tenant_id=tenant_a.pk) == Decimal(5)
