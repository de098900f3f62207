"""Date ranges picked in the portal, in the tenant's own days."""

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone
from django.utils.translation import gettext as _

from billing.periods import TimeInvalid, TimeOutOfRange, day_period, local_date, typed_bounds, user_time

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


def _typed_day(value: str | None, field: str, tz_name: str) -> dt.date | None:
    """A typed start or end day (None when empty); TimeInvalid / TimeOutOfRange as user_time says."""
    if not value:
        return None
    return user_time(value, field=field, bounds=typed_bounds(now=timezone.now()), shape="date", tz_name=tz_name)


def _custom(query, tz_name: str) -> DayRange | str:
    """The custom range `start`..`end`, or why it cannot be used."""
    try:
        start, end = _typed_day(query.get("start"), "start", tz_name), _typed_day(query.get("end"), "end", tz_name)
    except TimeOutOfRange:
        bounds = typed_bounds(now=timezone.now())
        return _("Dates must be from %(earliest)s to %(latest)s.") % {
            "earliest": local_date(bounds.earliest, tz_name).isoformat(),
            "latest": local_date(bounds.latest, tz_name).isoformat(),
        }
    except TimeInvalid:
        start = end = None
    if start is None or end is None:
        return _("Give both a start and an end date (YYYY-MM-DD).")
    if start > end:
        return _("The start date must not be after the end date.")
    if (end - start).days + 1 > MAX_CUSTOM_DAYS:
        return _("A custom range may span at most %(days)s days.") % {"days": MAX_CUSTOM_DAYS}
    return DayRange(start=start, end=end, preset="custom")


def range_from_query(query, tz_name: str) -> tuple[DayRange, str]:
    """The range a query string asks for (`range=7|30|90|custom`, `start`, `end`), and an error
    message when a custom range was unusable (the default range is used instead)."""
    today = today_for(tz_name)
    preset = query.get("range", "")
    if preset == "custom" or (not preset and (query.get("start") or query.get("end"))):
        custom = _custom(query, tz_name)
        if isinstance(custom, DayRange):
            return custom, ""
        return _preset(DEFAULT_PRESET, today), custom
    days = int(preset) if preset.isdigit() and int(preset) in PRESETS else DEFAULT_PRESET
    return _preset(days, today), ""


def _preset(days: int, today: dt.date) -> DayRange:
    return DayRange(start=today - dt.timedelta(days=days - 1), end=today, preset=str(days))
