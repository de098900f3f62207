"""credit_note: issue a credit note against a finalized or paid invoice, audited."""

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.invoicing import services
from billing.invoicing.models import Invoice
from billing.money import currency_exponent


def credit_amount(value: str, currency: str) -> Decimal:
    """A positive amount in the currency's minor units: 12.345 USD is refused, not rounded."""
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise CommandError(f"--amount {value!r} is not an amount (e.g. 12.50).") from None
    if not amount.is_finite() or amount <= 0:
        raise CommandError(f"--amount must be a positive number; got {value}.")
    places = currency_exponent(currency)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise CommandError(f"--amount {value}: {currency} has {places} decimal places.")
    return amount


class Command(BaseCommand):
    help = (
        "Issue a credit note against a finalized or paid invoice: everything not yet credited, or "
        "--amount. The note is numbered CN-YYYY-NNNNNN, credited to the tenant's wallet as an "
        "adjustment and audited; the invoice itself never changes, and the credited total never "
        "exceeds its subtotal."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--invoice", required=True, metavar="NUMBER", help="e.g. INV-2026-000042")
        parser.add_argument("--reason", required=True, help="why; printed on the note and kept in the audit log")
        parser.add_argument("--amount", help="in the invoice's currency, e.g. 12.50 (default: all that is left)")

    def handle(self, *args: Any, **options: Any) -> None:
        number = options["invoice"].strip()
        invoice = Invoice.objects.select_related("tenant").filter(number=number).first() if number else None
        if invoice is None:
            raise CommandError(
                f"No invoice numbered {number!r}. A draft has no number until it is finalized (close_month --finalize)."
            )
        amount = credit_amount(options["amount"], invoice.currency) if options["amount"] is not None else None
        try:
            note = services.credit_note_issue(
                invoice=invoice, reason=options["reason"], amount=amount, actor_label="cli:credit_note"
            )
        except services.InvoiceError as exc:
            raise CommandError(str(exc)) from None
        places = currency_exponent(note.currency)
        self.stdout.write(
            self.style.SUCCESS(
                f"{note.number}: {note.amount:.{places}f} {note.currency} credited against {invoice.number}"
                f" to {invoice.tenant.slug}'s wallet."
            )
        )
