"""Top-ups: the `topup` command, the Wallet admin action and the service; audited, idempotent."""

from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import AuditLog
from billing.models import LedgerEntry, Wallet
from billing.selectors import ledger_sum
from billing.services.balances.keys import balance_key
from billing.services.ledger import wallet_ensure
from billing.services.topups import wallet_topup

pytestmark = pytest.mark.django_db


def topup(*args: str) -> str:
    out = StringIO()
    call_command("topup", *args, stdout=out)
    return out.getvalue()


def test_topup_credits_and_is_audited(backend, tenant_a):
    out = topup("--tenant", "acme", "--amount", "10.00", "--reference", "pay-1")
    assert "Credited 10.00 USD to acme" in out and "Balance 10.00 USD" in out
    entry = LedgerEntry.objects.get()
    assert (entry.kind, entry.amount, entry.idempotency_key, entry.reference) == (
        "topup",
        Decimal("10"),
        "topup:pay-1",
        "pay-1",
    )
    assert Wallet.objects.get(tenant=tenant_a).balance == ledger_sum(tenant_id=tenant_a.pk) == Decimal("10")
    audit = AuditLog.objects.get(action="wallet.topup")
    assert audit.tenant == tenant_a and audit.actor_label == "cli:topup"
    assert audit.changes == {"amount": "10.000000", "currency": "USD", "reference": "pay-1"}


def test_topup_is_idempotent_on_reference(backend, tenant_a):
    topup("--tenant", "acme", "--amount", "10.00", "--reference", "pay-1")
    out = topup("--tenant", "acme", "--amount", "10", "--reference", "pay-1")
    assert "already credited" in out and "nothing changed" in out
    assert LedgerEntry.objects.count() == 1
    assert AuditLog.objects.filter(action="wallet.topup").count() == 1
    with pytest.raises(CommandError, match=r"already credited 10\.000000, not 11"):
        topup("--tenant", "acme", "--amount", "11", "--reference", "pay-1")
    assert Wallet.objects.get(tenant=tenant_a).balance == Decimal("10")


def test_topup_without_reference_always_credits(backend, tenant_a):
    topup("--tenant", "acme", "--amount", "1")
    topup("--tenant", "acme", "--amount", "1")
    assert Wallet.objects.get(tenant=tenant_a).balance == Decimal("2")


@pytest.mark.parametrize(
    ("amount", "message"),
    [("0", "positive"), ("-5", "positive"), ("ten", "not an amount"), ("1.0000001", "6 decimal"), ("NaN", "positive")],
)
def test_topup_rejects_bad_amounts(backend, tenant_a, amount, message):
    with pytest.raises(CommandError, match=message):
        topup("--tenant", "acme", "--amount", amount)
    assert not LedgerEntry.objects.exists()


def test_topup_unknown_tenant(backend, db):
    with pytest.raises(CommandError, match="No tenant"):
        topup("--tenant", "nobody", "--amount", "1")


def test_topup_moves_the_redis_balance_too(redis_backend, redis_client, key_a, tenant_a):
    topup("--tenant", "acme", "--amount", "1")
    key_a.post("/api/v1/authorize", {"model": "gpt-4o", "estimated_input_tokens": 1, "max_output_tokens": 1})
    assert int(redis_client.get(balance_key(tenant_a.pk))) == 1_000_000
    topup("--tenant", "acme", "--amount", "2.5")
    assert int(redis_client.get(balance_key(tenant_a.pk))) == 3_500_000


def test_topup_help():
    with pytest.raises(SystemExit) as exit_info:
        call_command("topup", "--help", stdout=StringIO())
    assert exit_info.value.code == 0


def test_service_refuses_a_long_reference(backend, tenant_a):
    with pytest.raises(ValidationError):
        wallet_topup(tenant=tenant_a, amount=Decimal(1), reference="x" * 151)


# --- The Django admin action ----------------------------------------------------------------------


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_superuser("ops@example.com", "ops@example.com", "pw-long-enough-1")
    client.force_login(user)
    return user


def test_admin_topup_action(backend, client, operator, tenant_a, tenant_b):
    wallet = wallet_ensure(tenant_id=tenant_a.pk, currency="USD")
    url = "/admin/billing/wallet/"
    page = client.post(url, {"action": "topup", "_selected_action": [wallet.pk]})
    assert page.status_code == 200
    assert b"Top up" in page.content and b"acme" in page.content
    done = client.post(
        url, {"action": "topup", "_selected_action": [wallet.pk], "apply": "1", "amount": "5.5", "reference": "wire-7"}
    )
    assert done.status_code == 302
    entry = LedgerEntry.objects.get()
    assert (entry.amount, entry.reference, entry.actor_label) == (Decimal("5.5"), "wire-7", str(operator))
    audit = AuditLog.objects.get(action="wallet.topup")
    assert audit.actor == operator and audit.tenant == tenant_a
    # the same reference again credits nothing
    client.post(
        url, {"action": "topup", "_selected_action": [wallet.pk], "apply": "1", "amount": "5.5", "reference": "wire-7"}
    )
    assert LedgerEntry.objects.count() == 1
    assert not LedgerEntry.objects.filter(tenant=tenant_b).exists()


def test_admin_topup_form_errors_redisplay(backend, client, operator, tenant_a):
    wallet = wallet_ensure(tenant_id=tenant_a.pk, currency="USD")
    page = client.post(
        "/admin/billing/wallet/",
        {"action": "topup", "_selected_action": [wallet.pk], "apply": "1", "amount": "-1", "reference": "x"},
    )
    assert page.status_code == 200
    assert b"positive" in page.content
    assert not LedgerEntry.objects.exists()


def test_admin_topup_needs_permission(backend, client, tenant_a):
    staff = get_user_model().objects.create_user("viewer@example.com", "viewer@example.com", "pw", is_staff=True)
    client.force_login(staff)
    wallet = wallet_ensure(tenant_id=tenant_a.pk, currency="USD")
    client.post(
        "/admin/billing/wallet/",
        {"action": "topup", "_selected_action": [wallet.pk], "apply": "1", "amount": "1", "reference": "x"},
    )
    assert not LedgerEntry.objects.exists()
