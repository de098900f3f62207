import zoneinfo

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import services
from accounts.cli import validation_as_command_error
from billing.models import PricePlan
from billing.services.ledger import wallet_ensure


class Command(BaseCommand):
    help = "Create a tenant with its wallet; optionally put it on a price plan."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--slug", default="", help="Default: derived from the name.")
        parser.add_argument("--timezone", default="UTC", help="IANA zone; billing days and months are cut in it.")
        parser.add_argument("--currency", default=None, help="ISO 4217 code; default the plan's, else USD.")
        parser.add_argument("--plan", default=None, help="Price plan slug.")

    def handle(self, *args, **options) -> None:
        if options["timezone"] not in zoneinfo.available_timezones():
            raise CommandError(f"--timezone {options['timezone']!r} is not an IANA zone (e.g. Asia/Shanghai).")
        plan = None
        if options["plan"]:
            plan = PricePlan.objects.filter(slug=options["plan"]).first()
            if plan is None:
                raise CommandError(f"No price plan {options['plan']!r}. Load one with import_prices --plan.")
        currency = (options["currency"] or (plan.currency if plan else "USD")).upper()
        if plan is not None and plan.currency != currency:
            raise CommandError(f"--currency {currency} differs from plan {plan.slug}'s currency {plan.currency}.")
        with validation_as_command_error():
            tenant = services.tenant_create(
                name=options["name"],
                slug=options["slug"],
                timezone_name=options["timezone"],
                currency=currency,
                price_plan_id=plan.pk if plan else None,
                actor_label="cli",
            )
        wallet_ensure(tenant_id=tenant.pk, currency=tenant.currency)
        self.stdout.write(f"Tenant {tenant.slug} created (id {tenant.pk}, {tenant.currency}, {tenant.timezone}).")
