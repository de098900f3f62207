"""release_expired_holds: give back the reservation of every hold whose usage never came."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.services.balances import BalanceUnavailable
from billing.services.holds import holds_release_expired


class Command(BaseCommand):
    help = (
        "Release every open hold past its expiry (HOLD_TTL_SECONDS after authorize placed it): one "
        "release ledger entry per hold, the balance and quota reservations given back. Idempotent, "
        "safe to run from several schedulers at once; run it every minute (cron or Celery beat)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size", type=int, default=500, help="holds claimed per transaction (default: %(default)s)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not 1 <= options["batch_size"] <= 10_000:
            raise CommandError("--batch-size must be between 1 and 10000.")
        try:
            result = holds_release_expired(batch_size=options["batch_size"])
        except BalanceUnavailable as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Released {result.released} expired hold(s) of {result.tenants} tenant(s), {result.amount} in total."
            )
        )
        if result.failed_tenants:
            raise CommandError(
                f"Could not release the holds of tenant(s) {', '.join(map(str, result.failed_tenants))}; "
                "see the log (job.tenant_failed) and the ops page, Failing jobs."
            )
