"""Date ranges picked in the portal, in the tenant's own days."""

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone
from django.utils.translation import gettext as _

from billing.periods import day_period, local_date

PRESETS = (7, 30, 90)
DEFAULT_PRESET = 30
MAX_CUSTOM_DAYS = 366


@dataclass(frozen=True)
class DayRange:
    start: dt.date  # tenant-local, included
    end: dt.date  # tenant-local, included
    preset: str  # "7", "30", "90" or "custom"

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def utc_bounds(self, tz_name: str) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) in UTC: from the first local midnight to the one after the last day."""
        return day_period(self.start, tz_name).start, day_period(self.end, tz_name).end


def today_for(tz_name: str) -> dt.date:
    return local_date(timezone.now(), tz_name)


def _parse_date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def range_from_query(query, tz_name: str) -> tuple[DayRange, str]:
    """The range a query string asks for (`range=7|30|90|custom`, `start`, `end`), and an error
    message when a custom range was unusable (the default range is used instead)."""
    today = today_for(tz_name)
    preset = query.get("range", "")
    if preset == "custom" or (not preset and (query.get("start") or query.get("end"))):
        start, end = _parse_date(query.get("start")), _parse_date(query.get("end"))
        if start is None or end is None:
            error = _("Give both a start and an end date (YYYY-MM-DD).")
        elif start > end:
            error = _("The start date must not be after the end date.")
        elif (end - start).days + 1 > MAX_CUSTOM_DAYS:
            error = _("A custom range may span at most %(days)s days.") % {"days": MAX_CUSTOM_DAYS}
        else:
            return DayRange(start=start, end=end, preset="custom"), ""
        return _preset(DEFAULT_PRESET, today), error
    days = int(preset) if preset.isdigit() and int(preset) in PRESETS else DEFAULT_PRESET
    return _preset(days, today), ""


def _preset(days: int, today: dt.date) -> DayRange:
    return DayRange(start=today - dt.timedelta(days=days - 1), end=today, preset=str(days))
