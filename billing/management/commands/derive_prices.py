"""derive_prices: re-derive a sell plan's prices from its cost plan, markups and exchange rate."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.cli import validation_as_command_error
from billing.management.commands.import_prices import parse_effective_from
from billing.management.resale_cli import plan_or_error, write_derived
from billing.services.resale import plan_derive


class Command(BaseCommand):
    help = (
        "Derive --plan's prices as of --effective-from (default now) from its cost plan's prices, its markups "
        "and the exchange rate in force then, and add a version for each that changed. Stored versions and "
        "events already rated never change. Running it twice adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--plan", required=True, metavar="SLUG", help="the sell plan")
        parser.add_argument("--effective-from", metavar="ISO", help="ISO 8601 with an offset; default now")

    def handle(self, *args: Any, **options: Any) -> None:
        plan = plan_or_error(options["plan"])
        effective_from = parse_effective_from(options["effective_from"])
        with validation_as_command_error():
            result = plan_derive(plan=plan, effective_from=effective_from, actor_label="cli:derive_prices")
        write_derived(self.stdout, [result], verbosity=options["verbosity"])
