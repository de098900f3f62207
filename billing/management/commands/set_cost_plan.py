"""set_cost_plan: make a plan a sell plan over a cost plan (or its own again), audited."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.cli import validation_as_command_error
from billing.management.resale_cli import plan_or_error
from billing.services.resale import plan_set_cost_plan


class Command(BaseCommand):
    help = (
        "Make --plan a sell plan whose prices are derived from --cost-plan (e.g. the imported provider "
        "prices) by its markups; '--cost-plan none' makes its prices its own again. Then set markups "
        "with set_markup. Audited."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--plan", required=True, metavar="SLUG", help="the sell plan")
        parser.add_argument("--cost-plan", required=True, metavar="SLUG", help="the cost plan's slug, or 'none'")

    def handle(self, *args: Any, **options: Any) -> None:
        plan = plan_or_error(options["plan"])
        cost_plan = (
            None if options["cost_plan"] == "none" else plan_or_error(options["cost_plan"], option="--cost-plan")
        )
        with validation_as_command_error():
            plan_set_cost_plan(plan=plan, cost_plan=cost_plan, actor_label="cli:set_cost_plan")
        what = f"derived from {cost_plan.slug} ({cost_plan.currency})" if cost_plan else "priced on its own"
        self.stdout.write(self.style.SUCCESS(f"Plan {plan.slug} ({plan.currency}) is now {what}."))
