"""Rebuild the DailyUsage rollup by hand (beat runs the same work periodically)."""

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import Tenant
from billing.periods import TimeInvalid, typed_bounds, user_time
from billing.services import tenant_jobs
from billing.services.tenant_jobs import TenantJob
from metering.services import rollup


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
        parser.add_argument(
            "--retry-failed",
            action="store_true",
            help="retry now the tenants the rollup is failing for (after their data was fixed), without waiting",
        )

    def handle(self, *args: object, **options: object) -> None:
        day = None
        if options["date"]:
            try:
                day = user_time(options["date"], field="--date", bounds=typed_bounds(now=timezone.now()), shape="date")
            except TimeInvalid as exc:
                raise CommandError(exc.message) from None
        tenant = None
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant with slug {options['tenant']!r}.")
        if options["all"] and (day or tenant):
            raise CommandError("--all rebuilds everything; it takes neither --date nor --tenant.")

        job = TenantJob.begin(tenant_jobs.ROLLUP, retry_now=bool(options["retry_failed"]))
        if options["all"]:
            results = rollup.rollup_all(progress=self._progress, job=job)
        elif day is not None:
            results = rollup.rollup_date(
                day=day, tenant_id=tenant.pk if tenant else None, progress=self._progress, job=job
            )
        elif tenant is not None:
            results = rollup.rollup_tenant(tenant_id=tenant.pk, progress=self._progress, job=job)
        else:
            results = rollup.rollup_refresh(progress=self._progress, job=job)
        seconds = sum(result.seconds for result in results)
        rows = sum(result.groups for result in results)
        self.stdout.write(self.style.SUCCESS(f"Rolled up {len(results)} day(s): {rows} row(s) in {seconds:.2f} s."))
        if job.failed:
            for tenant_id, failure in sorted(job.failed.items()):
                self.stderr.write(
                    f"tenant {tenant_id}: {failure.error} (next try {failure.next_retry_at:%Y-%m-%d %H:%M} UTC)"
                )
            raise CommandError(
                f"The rollup failed for {len(job.failed)} tenant(s); the others are rolled up. "
                "Fix their data, then run `rollup --retry-failed` (or wait for the retry)."
            )

    def _progress(self, result: rollup.DayResult) -> None:
        self.stdout.write(
            f"{result.day.isoformat()}  tenants {result.tenants:>5}  rows {result.groups:>7}  "
            f"written {result.written:>7}  deleted {result.deleted:>5}  {result.seconds * 1000:8.1f} ms"
        )
