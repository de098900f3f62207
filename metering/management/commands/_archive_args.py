"""Argument helpers shared by the archive commands."""

import datetime as dt
import re

from django.core.management.base import BaseCommand, CommandError

_PERIOD = re.compile(r"(\d{4})-(\d{2})")


def month_or_error(value: str) -> dt.date:
    """--period YYYY-MM as the first day of that UTC month."""
    match = _PERIOD.fullmatch(value.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 2000:
        raise CommandError(f"--period: {value!r} is not a month written YYYY-MM (2000-01 or later).")
    return dt.date(int(match.group(1)), int(match.group(2)), 1)


def progress_printer(command: BaseCommand) -> "object":
    """A progress callback writing one line per step to stderr (stdout keeps the result)."""

    def progress(stage: str, done: int) -> None:
        unit = "bytes" if stage == "export" else "rows"
        command.stderr.write(f"{stage}: {done:,} {unit}")

    return progress
