"""A finalized invoice cannot be changed: not by a service, the model, the admin, the API or raw SQL."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.test import Client

from invoicing import services
from invoicing.models import CreditNote, Invoice, InvoiceImmutable, InvoiceLine
from tests.invoicing.helpers import record, utc

pytestmark = pytest.mark.django_db

NOW = utc(2026, 11, 10)


@pytest.fixture
def issued(tenant_a, api_key_a):
    record(api_key_a, at=utc(2026, 10, 5), input_tokens=2_000_000, output_tokens=1000)
    draft, _ = services.invoice_draft_refresh(tenant=tenant_a, year=2026, month=10, now=NOW)
    invoice, _ = services.invoice_finalize(invoice=draft, actor_label="test", now=NOW)
    return invoice


def _snapshot(invoice: Invoice) -> tuple:
    invoice = Invoice.objects.get(pk=invoice.pk)
    lines = list(InvoiceLine.objects.filter(invoice=invoice).order_by("position").values_list())
    return (invoice.number, invoice.status, invoice.subtotal, invoice.amount_due, lines)


def test_services_leave_a_finalized_invoice_alone(issued, tenant_a, api_key_a):
    before = _snapshot(issued)
    record(api_key_a, at=utc(2026, 10, 6), received=utc(2026, 11, 12), input_tokens=1_000_000)
    invoice, changed = services.invoice_draft_refresh(tenant=tenant_a, year=2026, month=10, now=utc(2026, 11, 13))
    assert (invoice.pk, changed) == (issued.pk, False)
    _, finalized_now = services.invoice_finalize(invoice=issued, now=utc(2026, 11, 13))
    assert finalized_now is False
    assert _snapshot(issued) == before


def test_model_refuses_save_and_delete(issued):
    before = _snapshot(issued)
    issued.subtotal = Decimal("0")
    with pytest.raises(InvoiceImmutable):
        issued.save()
    with pytest.raises(InvoiceImmutable):
        issued.delete()
    line = issued.lines.first()
    line.amount = Decimal("0")
    with pytest.raises(InvoiceImmutable):
        line.save()
    with pytest.raises(InvoiceImmutable):
        line.delete()
    with pytest.raises(InvoiceImmutable):
        InvoiceLine(
            invoice=issued,
            position=99,
            usage_period="2026-10",
            model="x",
            token_kind="input",
            description="x",
            quantity=1,
            unit_price_per_mtok=1,
            amount_unrounded=0,
            amount=0,
        ).save()
    assert _snapshot(issued) == before


def test_raw_sql_cannot_change_issued_invoice_or_lines(issued):
    before = _snapshot(issued)
    statements = [
        ("UPDATE invoicing_invoiceline SET amount = 0 WHERE invoice_id = %s", [issued.pk]),
        ("DELETE FROM invoicing_invoiceline WHERE invoice_id = %s", [issued.pk]),
        ("UPDATE invoicing_invoice SET subtotal = 0, amount_due = 0, credits_applied = 0 WHERE id = %s", [issued.pk]),
        ("UPDATE invoicing_invoice SET number = 'INV-0000-000000' WHERE id = %s", [issued.pk]),
        (
            "UPDATE invoicing_invoice SET status = 'draft', number = NULL, finalized_at = NULL WHERE id = %s",
            [issued.pk],
        ),
        ("DELETE FROM invoicing_invoice WHERE id = %s", [issued.pk]),
    ]
    for sql, params in statements:
        with pytest.raises(IntegrityError, match="cannot be"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
    # Queryset writes that bypass save() meet the same trigger.
    with pytest.raises(IntegrityError), transaction.atomic():
        InvoiceLine.objects.filter(invoice=issued).update(quantity=0)
    assert _snapshot(issued) == before
    # The one allowed move: finalized -> paid (only the status columns change).
    with connection.cursor() as cursor:
        cursor.execute("UPDATE invoicing_invoice SET status = 'paid', paid_at = now() WHERE id = %s", [issued.pk])
    assert Invoice.objects.get(pk=issued.pk).status == "paid"


def test_credit_notes_cannot_change(issued):
    note = services.credit_note_issue(invoice=issued, amount=Decimal("1"), reason="outage", actor_label="test")
    note.amount = Decimal("2")
    with pytest.raises(InvoiceImmutable):
        note.save()
    with pytest.raises(InvoiceImmutable):
        note.delete()
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE invoicing_creditnote SET amount = 5 WHERE id = %s", [note.pk])
    assert CreditNote.objects.get(pk=note.pk).amount == Decimal("1.00")


def test_admin_is_read_only(issued):
    staff = get_user_model().objects.create_superuser("root@example.com", "root@example.com", "pw-123456789")
    client = Client()
    client.force_login(staff)
    before = _snapshot(issued)
    page = client.get(f"/admin/invoicing/invoice/{issued.pk}/change/")
    assert page.status_code == 200
    assert issued.number in page.content.decode()
    assert b'name="_save"' not in page.content
    assert client.post(f"/admin/invoicing/invoice/{issued.pk}/change/", {"subtotal": "0"}).status_code == 403
    assert client.post(f"/admin/invoicing/invoice/{issued.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/admin/invoicing/invoice/add/").status_code == 403
    line = issued.lines.first()
    assert client.post(f"/admin/invoicing/invoiceline/{line.pk}/delete/", {"post": "yes"}).status_code in (403, 404)
    assert _snapshot(issued) == before


def test_api_is_read_only(issued, key_a):
    before = _snapshot(issued)
    path = f"/api/v1/invoices/{issued.pk}"
    assert key_a.client.put(path, {"subtotal": "0"}, format="json").status_code == 405
    assert key_a.client.patch(path, {"subtotal": "0"}, format="json").status_code == 405
    assert key_a.client.delete(path).status_code == 405
    assert key_a.post("/api/v1/invoices", {"period": "2026-10"}).status_code == 405
    assert _snapshot(issued) == before
