"""Tenant-local days and months as UTC ranges. The end is excluded, always."""

import datetime as dt
import zoneinfo
from dataclasses import dataclass


@dataclass(frozen=True)
class Period:
    start: dt.datetime  # UTC, included
    end: dt.datetime  # UTC, excluded

    def contains(self, moment: dt.datetime) -> bool:
        return self.start <= moment < self.end


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


def month_of(moment: dt.datetime, tz_name: str) -> Period:
    local = moment.astimezone(zoneinfo.ZoneInfo(tz_name))
    return month_period(local.year, local.month, tz_name)
