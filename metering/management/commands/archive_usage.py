"""Archive usage months: export, verify, drop (beat runs --due daily; docs/operations.md)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from metering.management.commands._archive_args import month_or_error, progress_printer
from metering.models import UsageArchive
from metering.services import archive


class Command(BaseCommand):
    help = (
        "Archive one UTC month of usage events (--period YYYY-MM), or every month older than "
        "USAGE_RETENTION_MONTHS (--due): export to a Parquet file (zstd) in the archive storage, "
        "re-read and verify it against its manifest, then drop the month from the database. "
        "--verify PERIOD re-checks a stored archive without changing anything."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--period", help="The UTC month to archive, YYYY-MM.")
        group.add_argument("--due", action="store_true", help="Archive every month past the retention.")
        group.add_argument("--verify", metavar="PERIOD", help="Re-read and check the archive of this month.")
        group.add_argument("--ensure-partitions", action="store_true", help="Create the monthly partitions ahead.")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        progress = progress_printer(self)
        if options["ensure_partitions"]:
            created = archive.usage_partitions_ensure(now=now)
            self.stdout.write(f"Created {len(created)} partition(s): {', '.join(f'{m:%Y-%m}' for m in created) or '-'}")
            return
        if options["verify"]:
            month = month_or_error(options["verify"])
            found = UsageArchive.objects.filter(period=month).first()
            if found is None:
                raise CommandError(f"{month:%Y-%m} has no archive.")
            try:
                archive.verify_file(name=found.file_name, manifest=found.manifest, progress=progress)  # type: ignore[arg-type]
            except archive.ArchiveCorrupt as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(
                self.style.SUCCESS(f"{month:%Y-%m}: {found.file_name} matches its manifest ({found.rows} rows).")
            )
            return
        try:
            if options["due"]:
                results = archive.usage_archive_due(now=now, progress=progress)  # type: ignore[arg-type]
            else:
                month = month_or_error(options["period"])
                results = [archive.usage_archive_month(month=month, now=now, progress=progress)]  # type: ignore[arg-type]
        except (archive.ArchiveRefused, archive.ArchiveCorrupt) as exc:
            raise CommandError(str(exc)) from None
        for result in results:
            if result.already:
                self.stdout.write(f"{result.period:%Y-%m}: archived before ({result.rows} rows); nothing to do.")
                continue
            ratio = result.file_bytes / result.table_bytes if result.table_bytes else 0.0
            self.stdout.write(
                self.style.SUCCESS(
                    f"{result.period:%Y-%m}: {result.rows} rows archived in {result.seconds:.1f} s, "
                    f"file {result.file_bytes:,} bytes ({ratio:.1%} of the table's {result.table_bytes:,})."
                )
            )
        if not results:
            self.stdout.write("No month to archive.")
