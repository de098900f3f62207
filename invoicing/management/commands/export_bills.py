from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from invoicing import exports
from invoicing.management.commands._period import period_or_error


class Command(BaseCommand):
    help = (
        "Write one CSV of all tenants' invoices and lines for a period (stable columns, UTF-8, "
        "byte-identical on re-run). Without --out it goes to standard output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--period", required=True, help="The month, YYYY-MM.")
        parser.add_argument("--out", help="File to write (default: standard output).")
        parser.add_argument("--bom", action="store_true", help="Start with a UTF-8 byte order mark (for Excel).")
        parser.add_argument("--reconciliation", help="Also write the reconciliation report to this CSV file.")

    def handle(self, *args: Any, **options: Any) -> None:
        year, month = period_or_error(options["period"])
        body = exports.bills_csv(period=f"{year:04d}-{month:02d}", bom=options["bom"])
        _write(self, body, options["out"])
        if options["reconciliation"]:
            _write(
                self, exports.reconciliation_csv(year=year, month=month, bom=options["bom"]), options["reconciliation"]
            )


def _write(command: BaseCommand, body: bytes, out: str | None) -> None:
    if out:
        path = Path(out)
        try:
            path.write_bytes(body)
        except OSError as exc:
            raise CommandError(f"Cannot write {out}: {exc.strerror}") from None
        command.stderr.write(f"Wrote {len(body)} bytes to {out}")
    else:
        command.stdout.write(body.decode("utf-8"), ending="")
