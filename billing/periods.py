"""Tenant-local days and months as UTC ranges (the end is excluded, always), and the bounds
every typed date or time is checked against before any of them is cut."""

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass
from typing import Literal, overload


@dataclass(frozen=True)
class Period:
    start: dt.datetime  # UTC, included
    end: dt.datetime  # UTC, excluded


def _utc(local: dt.datetime) -> dt.datetime:
    return local.astimezone(dt.UTC)


def day_period(day: dt.date, tz_name: str) -> Period:
    tz = zoneinfo.ZoneInfo(tz_name)
    start = dt.datetime.combine(day, dt.time.min, tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=tz)
    return Period(_utc(start), _utc(end))


def month_period(year: int, month: int, tz_name: str) -> Period:
    tz = zoneinfo.ZoneInfo(tz_name)
    start = dt.datetime(year, month, 1, tzinfo=tz)
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    end = dt.datetime(next_year, next_month, 1, tzinfo=tz)
    return Period(_utc(start), _utc(end))


def local_date(moment: dt.datetime, tz_name: str) -> dt.date:
    return moment.astimezone(zoneinfo.ZoneInfo(tz_name)).date()


# --- Typed dates and times ------------------------------------------------------------------
# Every date or time a person or a client types (an event's timestamp, an API range, a portal
# filter, a command's --date or --period) passes `user_time`, which parses it and checks it
# against bounds: a value outside them, or one that no datetime can hold once converted to UTC
# (0001-01-01T00:00:00+01:00), is refused with TimeOutOfRange instead of overflowing later in
# some period arithmetic. Each edge turns the two errors into its own shape (API 400, form
# error, CommandError).

EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # nothing is metered or billed before it
TYPED_AHEAD = dt.timedelta(days=366)  # how far ahead a typed date may reach
OUT_OF_RANGE = "timestamp_out_of_range"  # the API's error code for TimeOutOfRange
_MONTH_RE = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True)
class TimeBounds:
    earliest: dt.datetime  # UTC, included
    latest: dt.datetime  # UTC, included

    def describe(self, tz_name: str | None = None) -> str:
        """The accepted range as people read it: times in UTC, or (tz_name) the local dates."""
        if tz_name is not None:
            return f"{local_date(self.earliest, tz_name)} to {local_date(self.latest, tz_name)}"
        return f"{_iso(self.earliest)} to {_iso(self.latest)}"


def _iso(moment: dt.datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def typed_bounds(*, now: dt.datetime) -> TimeBounds:
    """What a date typed into a query, a filter or a command may be: EARLIEST to a year ahead."""
    return TimeBounds(EARLIEST, now + TYPED_AHEAD)


def event_bounds(*, now: dt.datetime, max_past: dt.timedelta, max_future: dt.timedelta) -> TimeBounds:
    """What an event's timestamp may be: max_past back (never before EARLIEST) to max_future ahead."""
    earliest = EARLIEST if max_past >= now - EARLIEST else now - max_past
    return TimeBounds(earliest, now + max_future)


class TimeInvalid(ValueError):
    """Text that is not a date or time of the accepted shape; `message` says which."""

    code = "invalid_field"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class TimeOutOfRange(TimeInvalid):
    """A well-formed date or time outside the bounds (or beyond what a datetime holds)."""

    code = OUT_OF_RANGE

    def __init__(self, field: str, message: str, *, later: bool) -> None:
        super().__init__(field, message)
        self.later = later  # after the latest bound (else before the earliest, or unrepresentable)


Shape = Literal["time", "date", "month", "date_or_time"]


@overload
def user_time(
    text: object, *, field: str, bounds: TimeBounds, shape: Literal["time"] = ..., tz_name: str = ...
) -> dt.datetime: ...
@overload
def user_time(
    text: object, *, field: str, bounds: TimeBounds, shape: Literal["date", "month"], tz_name: str = ...
) -> dt.date: ...
@overload
def user_time(
    text: object, *, field: str, bounds: TimeBounds, shape: Literal["date_or_time"], tz_name: str = ...
) -> dt.date | dt.datetime: ...
def user_time(
    text: object, *, field: str, bounds: TimeBounds, shape: Shape = "time", tz_name: str = "UTC"
) -> dt.date | dt.datetime:
    """A typed date or time, parsed and within `bounds`; raise TimeInvalid or TimeOutOfRange.

    shape "time": ISO 8601 with a zone (Z or an offset), returned in UTC. "date": YYYY-MM-DD, a
    day in `tz_name`, within the bounds' local dates. "month": YYYY-MM, returned as its first
    day. "date_or_time": a date if it reads as one, else a time. A date returned here leaves
    room for its whole local day and the next (day_period, month_period never overflow).
    """
    if not isinstance(text, str):
        raise TimeInvalid(field, f"{field} must be a string: {_EXAMPLES[shape]}.")
    value = text.strip()
    if shape == "month":
        match = _MONTH_RE.fullmatch(value)
        if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1:
            raise TimeInvalid(field, f"{field} {_shown(text)} is not a month; use {_EXAMPLES[shape]}.")
        return _within_days(dt.date(int(match.group(1)), int(match.group(2)), 1), text, field, bounds, tz_name)
    if shape in ("date", "date_or_time"):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            if shape == "date":
                raise TimeInvalid(field, f"{field} {_shown(text)} is not a date; use {_EXAMPLES[shape]}.") from None
        else:
            return _within_days(day, text, field, bounds, tz_name)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise TimeInvalid(field, f"{field} {_shown(text)} is not ISO 8601; use {_EXAMPLES[shape]}.") from None
    if moment.utcoffset() is None:
        raise TimeInvalid(field, f"{field} {_shown(text)} has no zone; add Z or an offset like +08:00.")
    try:
        utc = moment.astimezone(dt.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        utc = None
    if utc is None or not bounds.earliest <= utc <= bounds.latest:
        later = utc is not None and utc > bounds.latest
        raise TimeOutOfRange(
            field, f"{field} {_shown(text)} is outside the accepted range, {bounds.describe()}.", later=later
        )
    return utc


_EXAMPLES = {
    "time": "ISO 8601 with a zone, e.g. 2026-11-23T10:00:00Z",
    "date": "YYYY-MM-DD, e.g. 2026-11-23",
    "month": "YYYY-MM, e.g. 2026-11",
    "date_or_time": "a date (YYYY-MM-DD) or an ISO 8601 time with a zone",
}


def _shown(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:61] + "...")


def _within_days(day: dt.date, text: str, field: str, bounds: TimeBounds, tz_name: str) -> dt.date:
    if not local_date(bounds.earliest, tz_name) <= day <= local_date(bounds.latest, tz_name):
        later = day > local_date(bounds.latest, tz_name)
        raise TimeOutOfRange(
            field, f"{field} {_shown(text)} is outside the accepted range, {bounds.describe(tz_name)}.", later=later
        )
    return day
