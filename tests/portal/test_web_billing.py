"""The billing page: balance, forecast, top-ups, the ledger (keyset pages), invoices."""

from decimal import Decimal

import pytest
from django.urls import reverse

from tests import factories

pytestmark = pytest.mark.django_db


def test_balance_topups_and_ledger(client, tenant_a, finance_a, usage_a):
    factories.topup(tenant_a, "25", reference="wire-001")
    client.force_login(finance_a)
    response = client.get(reverse("billing", kwargs={"slug": tenant_a.slug}))
    assert response.status_code == 200
    assert response.context["balance"] == Decimal(25) - usage_a["cost"]
    assert [e.reference for e in response.context["topups"]] == ["wire-001"]
    kinds = {e.kind for e in response.context["entries"]}
    assert kinds == {"topup", "usage"}
    page = response.content.decode()
    assert "wire-001" in page
    assert "24.95" in page  # 25 - 0.0462, rounded to cents


def test_ledger_pages_by_keyset(client, tenant_a, owner_a):
    for n in range(60):
        factories.topup(tenant_a, "1", reference=f"r-{n:02d}")
    client.force_login(owner_a)
    url = reverse("billing", kwargs={"slug": tenant_a.slug})
    first = client.get(url)
    assert len(first.context["entries"]) == 50
    second = client.get(url, {"before": first.context["next_before"]})
    assert len(second.context["entries"]) == 10
    assert second.context["next_before"] is None
    refs = [e.reference for e in first.context["entries"]] + [e.reference for e in second.context["entries"]]
    assert refs == [f"r-{n:02d}" for n in reversed(range(60))]


def test_no_invoices_yet(client, tenant_a, owner_a):
    client.force_login(owner_a)
    response = client.get(reverse("billing", kwargs={"slug": tenant_a.slug}))
    assert response.context["invoices"] == []
    assert b"No invoices yet" in response.content
