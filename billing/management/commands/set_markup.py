"""set_markup: a new version of a sell plan's markup or fixed price for a model pattern."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.cli import validation_as_command_error
from billing.management.commands.import_prices import parse_effective_from
from billing.management.resale_cli import plan_or_error, write_derived
from billing.models import PRICE_RATE_FIELDS
from billing.services.resale import markup_set


class Command(BaseCommand):
    help = (
        "Set a sell plan's markup for a model pattern: --model '*' for the whole plan, an exact name or a glob "
        "for some models (the exact name wins, then the longest glob). Either --multiplier (x the cost price, "
        ">= 0) or --fixed (a price in the plan's currency per 1M tokens). A new version from --effective-from "
        "(default now), audited; the plan's prices are re-derived from then, never before."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--plan", required=True, metavar="SLUG", help="the sell plan")
        parser.add_argument("--model", required=True, metavar="PATTERN", help="'*', a model name or a glob")
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("--multiplier", help="e.g. 1.3 (at most 6 places)")
        what.add_argument(
            "--fixed",
            metavar="RATE=VALUE,...",
            help=f"e.g. input_per_mtok=20,output_per_mtok=80 (rates: {', '.join(PRICE_RATE_FIELDS)})",
        )
        parser.add_argument("--effective-from", metavar="ISO", help="ISO 8601 with an offset; default now")
        parser.add_argument("--no-derive", action="store_true", help="only record the markup; derive later")

    def handle(self, *args: Any, **options: Any) -> None:
        plan = plan_or_error(options["plan"])
        effective_from = parse_effective_from(options["effective_from"])
        fixed = _fixed(options["fixed"]) if options["fixed"] is not None else None
        with validation_as_command_error():
            row, result = markup_set(
                plan=plan,
                model_pattern=options["model"],
                multiplier=options["multiplier"],
                fixed_rates=fixed,
                effective_from=effective_from,
                actor_label="cli:set_markup",
                derive=not options["no_derive"],
            )
        self.stdout.write(self.style.SUCCESS(f"Markup set: {row}."))
        write_derived(self.stdout, [result] if result is not None else [], verbosity=options["verbosity"])


def _fixed(text: str) -> dict[str, str]:
    rates: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise CommandError(f"--fixed: {part!r} is not RATE=VALUE (e.g. input_per_mtok=20).")
        if name.strip() in rates:
            raise CommandError(f"--fixed: {name.strip()} is given twice.")
        rates[name.strip()] = value.strip()
    return rates
