"""The credit_note command: finance's correction for an issued invoice, from the shell."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing.invoicing.models import CreditNote
from billing.models import LedgerEntry
from portal.accounts.models import AuditLog
from tests.billing.invoicing.helpers import record, utc
from tests.billing.invoicing.test_close import close, finalize

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
        (["--amount", "-1", "--reason", "x"], "positive"),
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
