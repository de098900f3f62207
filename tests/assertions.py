"""Checks shared by the test folders: the wallet, the ledger, stored costs, exported metrics."""

from decimal import Decimal

from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from billing.models import LedgerEntry, Wallet
from billing.money import round_to_ledger
from billing.selectors import ledger_sum
from metering.models import UsageEvent


def assert_charged_once(tenant, *, events: int = 1) -> Decimal:
    """`events` stored events, charged by exactly one usage entry; balance == sum(ledger) == -cost.

    Returns the charged amount (negative). Assumes no other wallet movement in the test.
    """
    stored = list(UsageEvent.objects.filter(tenant=tenant))
    assert len(stored) == events, f"{len(stored)} events stored, expected {events}"
    charges = list(LedgerEntry.objects.filter(tenant=tenant, kind=LedgerEntry.Kind.USAGE))
    assert len(charges) == 1, f"{len(charges)} usage charges, expected one"
    expected = -round_to_ledger(sum((event.cost for event in stored if event.cost is not None), Decimal(0)))
    assert charges[0].amount == expected
    balance = Wallet.objects.get(tenant=tenant).balance
    assert balance == ledger_sum(tenant_id=tenant.pk) == expected
    return expected


def assert_wallet_reconciles(tenant) -> Decimal:
    """The cached wallet balance equals the sum of the ledger (invariant 3); returns it."""
    balance = Wallet.objects.get(tenant=tenant).balance
    assert balance == ledger_sum(tenant_id=tenant.pk)
    return balance


# /metrics answers observers only: the tests present this token (portal/health.py).
METRICS_TOKEN = "test-metrics-token-0123456789abcdef"


def metric_value(name: str, **labels: str) -> float:
    """A sample as GET /metrics exports it now (0 when absent)."""
    with override_settings(METRICS_TOKEN=METRICS_TOKEN):
        response = APIClient().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
