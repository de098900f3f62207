"""The monthly close cuts months in the tenant's zone: across a daylight-saving change (Berlin)
and at a half-hour offset (Kolkata). Each event sits one second either side of a bound; the
invoices' period bounds, their usage lines and which month each event lands in must agree.

Every event has a distinct power-of-two token count, so a line's quantity names its events.
"""

import datetime as dt
import zoneinfo
from decimal import Decimal

import pytest

from invoicing import services
from invoicing.models import Invoice, InvoiceLine
from tests.invoicing.helpers import record, utc

pytestmark = pytest.mark.django_db

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")
SECOND = dt.timedelta(seconds=1)
NOW = utc(2026, 12, 10)  # every month below is over; passed to the services, not read from a clock


def _last_sunday(year: int, month: int) -> dt.date:
    next_month = dt.date(year + month // 12, month % 12 + 1, 1)
    last = next_month - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - 6) % 7)


def _close(tenant, year: int, month: int, *, finalize: bool = True) -> Invoice:
    [result] = services.invoices_close_month(
        year=year, month=month, tenant=tenant, finalize=finalize, actor_label="test", now=NOW
    )
    assert result.invoice is not None, result
    return Invoice.objects.get(pk=result.invoice.pk)


def _input_lines(invoice: Invoice) -> list[tuple[str, str, int, Decimal]]:
    """(kind, usage period, tokens, amount) of each input-token line (no other kind is billed)."""
    lines = InvoiceLine.objects.filter(invoice=invoice).order_by("position")
    assert {line.token_kind for line in lines} <= {"input"}
    return [(line.kind, line.usage_period, line.quantity, line.amount) for line in lines]


def _events(key, moments: list[dt.datetime]) -> dict[dt.datetime, int]:
    tokens = {}
    for n, moment in enumerate(moments):
        tokens[moment] = 1_000_000 << n
        record(key, at=moment, input_tokens=tokens[moment], output_tokens=0)
    return tokens


def test_a_berlin_october_closes_after_the_dst_change(make_tenant):
    tenant, key = make_tenant("berlin", tz="Europe/Berlin")
    change_day = _last_sunday(2026, 10)
    assert change_day == dt.date(2026, 10, 25)
    # 02:30 happens twice that night: first in summer time (UTC+2), then in winter time (UTC+1).
    first_half_past_two = dt.datetime.combine(change_day, dt.time(2, 30), tzinfo=BERLIN)
    second_half_past_two = dt.datetime.combine(change_day, dt.time(2, 30, fold=1), tzinfo=BERLIN)
    assert first_half_past_two.utcoffset() == dt.timedelta(hours=2)
    assert second_half_past_two.utcoffset() == dt.timedelta(hours=1)
    october_start = dt.datetime(2026, 10, 1, tzinfo=BERLIN).astimezone(dt.UTC)
    october_end = dt.datetime(2026, 11, 1, tzinfo=BERLIN).astimezone(dt.UTC)
    assert (october_start, october_end) == (utc(2026, 9, 30, 22), utc(2026, 10, 31, 23))
    assert second_half_past_two.astimezone(dt.UTC) == utc(2026, 10, 25, 1, 30)

    last_of_september = october_start - SECOND
    in_october = [
        october_start,
        first_half_past_two.astimezone(dt.UTC),
        second_half_past_two.astimezone(dt.UTC),
        october_end - SECOND,  # 23:59:59 on 31 October, winter time
    ]
    first_of_november = october_end  # 00:00 on 1 November, winter time
    tokens = _events(key, [last_of_september, *in_october, first_of_november])

    september = _close(tenant, 2026, 9)
    october = _close(tenant, 2026, 10)
    november = _close(tenant, 2026, 11, finalize=False)

    assert (october.period, october.period_start, october.period_end) == ("2026-10", october_start, october_end)
    assert october.timezone == "Europe/Berlin" and october.status == Invoice.Status.FINALIZED
    assert (september.period_end, november.period_start) == (october_start, october_end)
    assert october.period_end - october.period_start == dt.timedelta(days=31, hours=1)  # the extra hour
    october_tokens = sum(tokens[moment] for moment in in_october)
    assert _input_lines(september) == [("usage", "2026-09", tokens[last_of_september], Decimal("2.50"))]
    assert _input_lines(october) == [("usage", "2026-10", october_tokens, Decimal("75.00"))]
    assert _input_lines(november) == [("usage", "2026-11", tokens[first_of_november], Decimal("80.00"))]
    assert october.subtotal == Decimal("75.00") and october.lines.get().requests == 4


def test_a_kolkata_month_is_cut_at_half_past_six_utc(make_tenant):
    tenant, key = make_tenant("kolkata", tz="Asia/Kolkata")
    march_start = dt.datetime(2026, 3, 1, tzinfo=KOLKATA).astimezone(dt.UTC)
    march_end = dt.datetime(2026, 4, 1, tzinfo=KOLKATA).astimezone(dt.UTC)
    assert (march_start, march_end) == (utc(2026, 2, 28, 18, 30), utc(2026, 3, 31, 18, 30))
    in_march = [march_start, march_end - SECOND]
    tokens = _events(key, [march_start - SECOND, *in_march, march_end])

    february = _close(tenant, 2026, 2)
    march = _close(tenant, 2026, 3)
    april = _close(tenant, 2026, 4, finalize=False)

    assert (march.period_start, march.period_end) == (march_start, march_end)
    assert (february.period_end, april.period_start) == (march_start, march_end)
    assert _input_lines(february) == [("usage", "2026-02", tokens[march_start - SECOND], Decimal("2.50"))]
    assert _input_lines(march) == [
        ("usage", "2026-03", tokens[march_start] + tokens[march_end - SECOND], Decimal("15.00"))
    ]
    assert _input_lines(april) == [("usage", "2026-04", tokens[march_end], Decimal("20.00"))]
