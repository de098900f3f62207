"""topup: credit a tenant's prepaid wallet (idempotent on --reference), audited."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.cli import tenant_or_error, validation_as_command_error
from billing.money import format_ledger_amount
from billing.selectors import wallet_balance
from billing.services.topups import topup_amount, wallet_topup


class Command(BaseCommand):
    help = (
        "Credit a tenant's prepaid wallet with a top-up ledger entry. With --reference (a payment or "
        "transfer id) running it again changes nothing; the same reference with another amount fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, metavar="SLUG", help="the tenant's slug")
        parser.add_argument("--amount", required=True, help="in the wallet's currency, e.g. 10.00 (at most 6 places)")
        parser.add_argument("--reference", default="", help="payment id; makes the top-up idempotent")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_or_error(options["tenant"])
        with validation_as_command_error():
            amount = topup_amount(options["amount"])
            entry, created = wallet_topup(
                tenant=tenant, amount=amount, reference=options["reference"], actor_label="cli:topup"
            )
        currency = tenant.price_plan.currency if tenant.price_plan is not None else tenant.currency
        balance = format_ledger_amount(wallet_balance(tenant_id=tenant.pk), currency)
        if not created:
            self.stdout.write(
                f"Reference {options['reference']!r} was already credited to {tenant.slug} "
                f"(entry {entry.pk}); nothing changed. Balance {balance} {currency}."
            )
            return
        shown = format_ledger_amount(entry.amount, currency)
        self.stdout.write(
            self.style.SUCCESS(
                f"Credited {shown} {currency} to {tenant.slug} (entry {entry.pk}). Balance {balance} {currency}."
            )
        )
