"""set_exchange_rate: add a version of an operator-set exchange rate (audited), and re-derive."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.cli import validation_as_command_error
from billing.management.commands.import_prices import parse_effective_from
from billing.management.resale_cli import write_derived
from billing.services.resale import exchange_rate_set


class Command(BaseCommand):
    help = (
        "Set the exchange rate a sell plan in --to uses over a cost plan in --from: 1 FROM = RATE TO, from "
        "--effective-from (default now). A new version, audited; older versions and the prices derived "
        "with them stay. Then the sell plans of that currency pair get new derived prices from the same moment."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="base", required=True, metavar="CUR", help="the cost currency, e.g. USD")
        parser.add_argument("--to", dest="quote", required=True, metavar="CUR", help="the sell currency, e.g. CNY")
        parser.add_argument("--rate", required=True, help="TO units per FROM unit, > 0, at most 12 places, e.g. 7.3")
        parser.add_argument("--effective-from", metavar="ISO", help="ISO 8601 with an offset; default now")
        parser.add_argument("--note", default="", help="why (kept with the rate and in the audit log)")
        parser.add_argument("--no-derive", action="store_true", help="only record the rate; derive later")

    def handle(self, *args: Any, **options: Any) -> None:
        effective_from = parse_effective_from(options["effective_from"])
        with validation_as_command_error():
            row, results = exchange_rate_set(
                base=options["base"],
                quote=options["quote"],
                rate=options["rate"],
                effective_from=effective_from,
                note=options["note"],
                actor_label="cli:set_exchange_rate",
                derive=not options["no_derive"],
            )
        self.stdout.write(self.style.SUCCESS(f"Exchange rate set: {row}."))
        write_derived(self.stdout, results, verbosity=options["verbosity"])
