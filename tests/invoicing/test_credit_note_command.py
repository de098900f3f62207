"""Credit notes issued by the platform: the credit_note command and the operators' page."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts.models import AuditLog
from billing.models import LedgerEntry
from invoicing.models import CreditNote
from tests.invoicing.helpers import record, utc
from tests.invoicing.test_close import close, finalize

pytestmark = pytest.mark.django_db


@pytest.fixture
def invoice(tenant_a, api_key_a):
    record(api_key_a, at=utc(2026, 10, 5), input_tokens=2_000_000, output_tokens=0)  # 5.00 USD
    return finalize(close(tenant_a))


def credit(*args: str) -> str:
    out = StringIO()
    call_command("credit_note", *args, stdout=out)
    return out.getvalue()


def test_partial_then_the_rest_each_credited_to_the_wallet_and_audited(invoice, tenant_a):
    first = credit("--invoice", invoice.number, "--amount", "1.50", "--reason", "outage on 5 October")
    assert invoice.number in first and "1.50 USD" in first
    rest = credit("--invoice", invoice.number, "--reason", "goodwill")
    assert "3.50 USD" in rest
    notes = list(CreditNote.objects.filter(invoice=invoice).order_by("number").values_list("amount", "reason"))
    assert notes == [(Decimal("1.50"), "outage on 5 October"), (Decimal("3.50"), "goodwill")]
    credited = LedgerEntry.objects.filter(tenant=tenant_a, kind="adjustment").values_list("amount", flat=True)
    assert sorted(credited) == [Decimal("1.50"), Decimal("3.50")]
    assert AuditLog.objects.filter(action="credit_note.issue", actor_label="cli:credit_note").count() == 2
    with pytest.raises(CommandError, match="Nothing left"):
        credit("--invoice", invoice.number, "--reason", "again")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--invoice", "INV-1999-000001", "--reason", "x"], "No invoice numbered 'INV-1999-000001'"),
        (["--amount", "ten", "--reason", "x"], "not an amount"),
        (["--amount", "-1", "--reason", "x"], "positive number"),
        (["--amount", "NaN", "--reason", "x"], "positive"),
        (["--amount", "1.234", "--reason", "x"], "USD has 2 decimal places"),
        (["--amount", "5.01", "--reason", "x"], r"at most 5\.00"),
        (["--reason", "  "], "reason"),
    ],
)
def test_bad_arguments_are_refused_and_credit_nothing(invoice, args, message):
    if "--invoice" not in args:
        args = ["--invoice", invoice.number, *args]
    with pytest.raises(CommandError, match=message):
        credit(*args)
    assert not CreditNote.objects.exists()
    assert not LedgerEntry.objects.filter(kind="adjustment").exists()


def test_a_draft_cannot_be_credited(tenant_a, api_key_a):
    record(api_key_a, at=utc(2026, 10, 5), input_tokens=1000, output_tokens=0)
    assert close(tenant_a).number is None  # numbered at finalization: a draft cannot be named
    with pytest.raises(CommandError, match="draft has no number"):
        credit("--invoice", "", "--reason", "x")
    assert not CreditNote.objects.exists()


# --- The same from the operators' pages -------------------------------------------------------


def test_an_operator_issues_a_credit_note_from_the_portal(client, operator, invoice, tenant_a):
    client.force_login(operator)
    url = reverse("ops-credit-notes")
    assert client.get(url).status_code == 200
    response = client.post(url, {"invoice": invoice.number, "amount": "2.25", "reason": "outage"}, follow=True)
    page = response.content.decode()
    assert "2.25 USD credited to" in page and "outage" in page
    note = CreditNote.objects.get(invoice=invoice)
    assert (note.amount, note.actor) == (Decimal("2.25"), operator)
    assert LedgerEntry.objects.get(tenant=tenant_a, kind="adjustment").amount == Decimal("2.25")
    assert AuditLog.objects.filter(action="credit_note.issue", actor=operator).count() == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"invoice": "INV-1999-000001", "amount": "1", "reason": "x"}, "No issued invoice has this number"),
        ({"amount": "1.001", "reason": "x"}, "USD has 2 decimal places"),
        ({"amount": "0", "reason": "x"}, "positive number"),
        ({"amount": "9", "reason": "x"}, r"at most 5.00"),
        ({"amount": "1", "reason": ""}, "This field is required"),
    ],
)
def test_bad_credit_notes_in_the_portal_credit_nothing(client, operator, invoice, data, message):
    client.force_login(operator)
    response = client.post(reverse("ops-credit-notes"), {"invoice": invoice.number, **data})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not CreditNote.objects.exists()


def test_tenant_users_cannot_issue_credit_notes(client, owner_a, finance_a, invoice):
    for user in (owner_a, finance_a):
        client.force_login(user)
        response = client.post(reverse("ops-credit-notes"), {"invoice": invoice.number, "reason": "self-service"})
        assert response.status_code == 403
    assert not CreditNote.objects.exists()
