"""Bring an archived usage month back into a side table, for an audit or a dispute."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.cli import tenant_or_error
from metering.management.commands._archive_args import month_or_error, progress_printer
from metering.services import archive


class Command(BaseCommand):
    help = (
        "Restore an archived UTC month of usage events (--period YYYY-MM), all tenants or one "
        "(--tenant SLUG), into the side table metering_usageevent_restored_YYYY_MM, exactly as the "
        "rows were (ids included). The file is verified against its manifest first. Billing, "
        "rollups and reconciliation never read the side table; drop it when done."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--period", required=True, help="The archived UTC month, YYYY-MM.")
        parser.add_argument("--tenant", help="Only this tenant's events (slug).")
        parser.add_argument("--replace", action="store_true", help="Drop and refill a side table restored before.")

    def handle(self, *args: Any, **options: Any) -> None:
        month = month_or_error(options["period"])
        tenant = tenant_or_error(options["tenant"]) if options["tenant"] else None
        try:
            result = archive.usage_archive_restore(
                month=month,
                tenant_id=tenant.pk if tenant is not None else None,
                replace=options["replace"],
                progress=progress_printer(self),  # type: ignore[arg-type]
            )
        except (archive.ArchiveRefused, archive.ArchiveCorrupt) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.period:%Y-%m}: {result.rows} rows restored into {result.table} in {result.seconds:.1f} s."
            )
        )
