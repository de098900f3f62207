"""Rebuild the DailyUsage rollup by hand (beat runs the same work periodically)."""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError, CommandParser

from metering.services import rollup
from portal.accounts.models import Tenant


class Command(BaseCommand):
    help = (
        "Rebuild daily usage rollups. Without options: the days touched by events received since "
        "the last run (late events included). --date D: that local day for every tenant (or --tenant). "
        "--tenant S alone: every day of that tenant. --all: every day of every tenant."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--date", help="tenant-local day to rebuild, YYYY-MM-DD")
        parser.add_argument("--tenant", help="tenant slug")
        parser.add_argument("--all", action="store_true", help="rebuild every day of every tenant")

    def handle(self, *args: object, **options: object) -> None:
        day = None
        if options["date"]:
            try:
                day = dt.date.fromisoformat(str(options["date"]))
            except ValueError:
                raise CommandError(f"--date must be YYYY-MM-DD, got {options['date']!r}") from None
        tenant = None
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant with slug {options['tenant']!r}.")
        if options["all"] and (day or tenant):
            raise CommandError("--all rebuilds everything; it takes neither --date nor --tenant.")

        if options["all"]:
            results = rollup.rollup_all(progress=self._progress)
        elif day is not None:
            tenants = {tenant.pk: tenant.timezone} if tenant else None
            results = [rollup.rollup_day(day=day, tenants=tenants)]
            self._progress(results[0])
        elif tenant is not None:
            results = rollup.rollup_tenant(tenant_id=tenant.pk, progress=self._progress)
        else:
            results = rollup.rollup_refresh(progress=self._progress)
        seconds = sum(result.seconds for result in results)
        rows = sum(result.groups for result in results)
        self.stdout.write(self.style.SUCCESS(f"Rolled up {len(results)} day(s): {rows} row(s) in {seconds:.2f} s."))

    def _progress(self, result: rollup.DayResult) -> None:
        self.stdout.write(
            f"{result.day.isoformat()}  tenants {result.tenants:>5}  rows {result.groups:>7}  "
            f"written {result.written:>7}  deleted {result.deleted:>5}  {result.seconds * 1000:8.1f} ms"
        )
