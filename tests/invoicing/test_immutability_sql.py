"""The immutability triggers (migration 0002), poked with raw SQL that the model guards never see.

Every statement below would succeed without the trigger: each keeps the row valid for the other
constraints (amount_due stays subtotal - credits_applied, positions stay unique), so the only
thing that can refuse it is the trigger, and the test checks the trigger's own message.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from invoicing import services
from invoicing.models import CreditNote, Invoice, InvoiceLine
from tests.invoicing.helpers import record

pytestmark = pytest.mark.django_db

LINE_COLUMNS = [f.column for f in InvoiceLine._meta.concrete_fields if f.column not in ("id", "position")]


def _last_month(now: dt.datetime) -> tuple[int, int]:
    return (now.year - 1, 12) if now.month == 1 else (now.year, now.month - 1)


@pytest.fixture
def now(settings) -> dt.datetime:
    settings.INVOICE_SETTLE_SECONDS = 0
    return timezone.now()


@pytest.fixture
def issued(tenant_a, api_key_a, now) -> Invoice:
    """A finalized invoice of last month with two lines (input and output tokens)."""
    year, month = _last_month(now)
    record(api_key_a, at=dt.datetime(year, month, 5, 12, tzinfo=dt.UTC), input_tokens=2_000_000, output_tokens=1000)
    draft, _ = services.invoice_draft_refresh(tenant=tenant_a, year=year, month=month, now=now)
    invoice, _ = services.invoice_finalize(invoice=draft, actor_label="test", now=now)
    assert invoice.status == Invoice.Status.FINALIZED and invoice.lines.count() == 2
    return invoice


@pytest.fixture
def draft(tenant_b, api_key_b, now) -> Invoice:
    """A draft with lines, of another tenant (its lines may change freely)."""
    year, month = _last_month(now)
    record(api_key_b, at=dt.datetime(year, month, 6, 12, tzinfo=dt.UTC), input_tokens=1_000_000)
    invoice, _ = services.invoice_draft_refresh(tenant=tenant_b, year=year, month=month, now=now)
    assert invoice.is_draft and invoice.lines.exists()
    return invoice


@pytest.fixture
def paid(issued) -> Invoice:
    services.invoice_mark_paid(invoice=issued, actor_label="test")
    invoice = Invoice.objects.get(pk=issued.pk)
    assert invoice.status == Invoice.Status.PAID
    return invoice


def _state(invoice: Invoice) -> tuple:
    row = Invoice.objects.filter(pk=invoice.pk).values().get()
    lines = list(InvoiceLine.objects.filter(invoice_id=invoice.pk).order_by("position").values())
    notes = list(CreditNote.objects.filter(invoice_id=invoice.pk).order_by("pk").values())
    return row, lines, notes


def _refused(sql: str, params: list, *, match: str) -> None:
    with pytest.raises(IntegrityError, match=match), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def _copy_line_sql(*, position: str) -> str:
    """INSERT a copy of one line of invoice %s (the copy's invoice is the 2nd parameter)."""
    columns = ", ".join(LINE_COLUMNS)
    selected = ", ".join("%s" if c == "invoice_id" else c for c in LINE_COLUMNS)
    return (
        f"INSERT INTO invoicing_invoiceline (position, {columns}) "
        f"SELECT {position}, {selected} FROM invoicing_invoiceline WHERE invoice_id = %s ORDER BY position LIMIT 1"
    )


def test_a_line_cannot_be_inserted_into_a_finalized_invoice(issued, draft):
    before = _state(issued)
    # Its own line copied under a free position, and a draft's line copied into it.
    _refused(_copy_line_sql(position="1000"), [issued.pk, issued.pk], match="lines of invoice .* cannot be changed")
    _refused(_copy_line_sql(position="1001"), [issued.pk, draft.pk], match="lines of invoice .* cannot be changed")
    assert _state(issued) == before
    # The same INSERT into a draft is allowed: the refusal above is the trigger, not the SQL.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_copy_line_sql(position="1000"), [draft.pk, draft.pk])
    assert InvoiceLine.objects.filter(invoice=draft, position=1000).exists()


def test_a_finalized_invoices_lines_cannot_be_updated_deleted_or_moved(issued, draft):
    before = _state(issued)
    line = issued.lines.order_by("position").first()
    for sql, params in [
        ("UPDATE invoicing_invoiceline SET amount = amount + 1 WHERE id = %s", [line.pk]),
        ("UPDATE invoicing_invoiceline SET description = 'edited' WHERE invoice_id = %s", [issued.pk]),
        ("DELETE FROM invoicing_invoiceline WHERE id = %s", [line.pk]),
        ("DELETE FROM invoicing_invoiceline WHERE invoice_id = %s", [issued.pk]),
        ("UPDATE invoicing_invoiceline SET invoice_id = %s, position = 1000 WHERE id = %s", [draft.pk, line.pk]),
    ]:
        _refused(sql, params, match="lines of invoice .* cannot be changed")
    # A draft's line cannot be moved onto the issued invoice either.
    draft_line = draft.lines.order_by("position").first()
    _refused(
        "UPDATE invoicing_invoiceline SET invoice_id = %s, position = 1000 WHERE id = %s",
        [issued.pk, draft_line.pk],
        match="lines cannot move to issued invoice",
    )
    assert _state(issued) == before
    # A draft's lines stay writable.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE invoicing_invoiceline SET description = 'edited' WHERE id = %s", [draft_line.pk])
        cursor.execute("DELETE FROM invoicing_invoiceline WHERE id = %s", [draft_line.pk])
    assert not InvoiceLine.objects.filter(pk=draft_line.pk).exists()


@pytest.mark.parametrize(
    "changes",
    [
        "subtotal = subtotal + 1, amount_due = amount_due + 1",
        "unrounded_total = unrounded_total + 1",
        "number = number || '-X'",
        "finalized_at = finalized_at - interval '1 day'",
        "tenant_name = 'Someone Else'",
        "issuer = '{}'::jsonb",
    ],
)
@pytest.mark.parametrize("status", ["paid", "void"])
def test_moving_to_paid_or_void_cannot_change_anything_else(issued, status, changes):
    before = _state(issued)
    stamp = "paid_at = now()" if status == "paid" else "voided_at = now(), void_reason = 'dup'"
    _refused(
        f"UPDATE invoicing_invoice SET status = %s, {stamp}, {changes} WHERE id = %s",
        [status, issued.pk],
        match="cannot be changed",
    )
    assert _state(issued) == before
    # The move alone (only the status columns) is allowed.
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE invoicing_invoice SET status = %s, {stamp} WHERE id = %s", [status, issued.pk])
    assert Invoice.objects.get(pk=issued.pk).status == status


def test_a_paid_invoice_is_final(paid):
    before = _state(paid)
    for sql in [
        "UPDATE invoicing_invoice SET status = 'finalized', paid_at = NULL WHERE id = %s",
        "UPDATE invoicing_invoice SET status = 'void', voided_at = now(), void_reason = 'late' WHERE id = %s",
        "UPDATE invoicing_invoice SET paid_at = paid_at + interval '1 day' WHERE id = %s",
        "UPDATE invoicing_invoice SET credits_applied = 0, amount_due = subtotal WHERE id = %s",
    ]:
        _refused(sql, [paid.pk], match="is paid; it cannot be changed")
    _refused("DELETE FROM invoicing_invoice WHERE id = %s", [paid.pk], match="is paid; it cannot be deleted")
    _refused("DELETE FROM invoicing_invoiceline WHERE invoice_id = %s", [paid.pk], match="cannot be changed")
    assert _state(paid) == before


def test_a_credit_note_cannot_be_deleted_or_changed(issued):
    note = services.credit_note_issue(invoice=issued, amount=Decimal("1"), reason="outage", actor_label="test")
    before = _state(issued)
    for sql in [
        "DELETE FROM invoicing_creditnote WHERE id = %s",
        "UPDATE invoicing_creditnote SET amount = amount + 1 WHERE id = %s",
        "UPDATE invoicing_creditnote SET reason = 'edited' WHERE id = %s",
    ]:
        _refused(sql, [note.pk], match="credit note .* cannot be changed")
    # Nor can the invoice be deleted from under its notes.
    _refused("DELETE FROM invoicing_invoice WHERE id = %s", [issued.pk], match="cannot be deleted")
    assert _state(issued) == before
