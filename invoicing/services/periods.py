"""Which month an invoice covers, as typed by people and as labelled on invoices ('2026-10')."""

import datetime as dt

from django.utils import timezone

from billing.periods import typed_bounds, user_time


def parse_period(value: str, *, now: dt.datetime | None = None) -> tuple[int, int]:
    """'2026-10' -> (2026, 10); a ValueError with a clear message otherwise (TimeOutOfRange for a
    month before 2000 or more than a year ahead: billing/periods.py, user_time)."""
    first = user_time(value, field="period", bounds=typed_bounds(now=now or timezone.now()), shape="month")
    return first.year, first.month


def period_label(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def label_of(day: dt.date) -> str:
    return period_label(day.year, day.month)


def previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)
