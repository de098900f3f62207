"""Quota windows: which tenant-local day, month or lifetime a moment falls in.

A window is named by its period ("day", "month", "lifetime") and its tenant-local start date;
the lifetime window starts at LIFETIME_START. A quota cell is (api_key_ref, period, start),
with api_key_ref 0 for the whole tenant. Pure functions; the UTC bounds come from periods.py.
"""

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache

from billing.periods import Period, day_period, month_period

DAY, MONTH, LIFETIME = "day", "month", "lifetime"
PERIODS = (DAY, MONTH, LIFETIME)
LIFETIME_START = dt.date(1970, 1, 1)
TENANT_SCOPE = 0  # api_key_ref of a tenant-wide cell


@dataclass(frozen=True, slots=True)
class Cell:
    api_key_ref: int  # 0: the whole tenant
    period: str
    start: dt.date


@lru_cache(maxsize=64)
def _zone(tz_name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(tz_name)


def window_starts(moment: dt.datetime, tz_name: str) -> dict[str, dt.date]:
    """{period: tenant-local start date} of the windows containing `moment`."""
    local = moment.astimezone(_zone(tz_name)).date()
    return {DAY: local, MONTH: local.replace(day=1), LIFETIME: LIFETIME_START}


def cells_for(moment: dt.datetime, tz_name: str, api_key_id: int) -> list[Cell]:
    """The six cells a request of `api_key_id` at `moment` counts in: tenant d/m/l, key d/m/l."""
    starts = window_starts(moment, tz_name)
    return [Cell(ref, period, starts[period]) for ref in (TENANT_SCOPE, api_key_id) for period in PERIODS]


def window_period(period: str, start: dt.date, tz_name: str) -> Period | None:
    """The UTC bounds of a window (end excluded); None for the lifetime window."""
    if period == DAY:
        return day_period(start, tz_name)
    if period == MONTH:
        return month_period(start.year, start.month, tz_name)
    return None
