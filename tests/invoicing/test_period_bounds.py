"""A month typed into a command or an export URL is bounded: 2000-01 to a year ahead."""

import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from tests.portal.web_support import make_user

pytestmark = pytest.mark.django_db

ABSURD = ["9999-12", "0001-01", "1999-12", "0000-01"]


def _far_ahead() -> str:
    month = (timezone.now() + dt.timedelta(days=400)).date()
    return f"{month:%Y-%m}"


@pytest.mark.parametrize("period", [*ABSURD, "far ahead"])
@pytest.mark.parametrize("command", ["close_month", "export_bills", "reconcile_period"])
def test_absurd_periods_are_command_errors(tenant_a, command, period):
    period = _far_ahead() if period == "far ahead" else period
    with pytest.raises(CommandError, match="period"):
        call_command(command, "--period", period, stdout=io.StringIO(), stderr=io.StringIO())


def test_this_month_still_closes(tenant_a):
    out = io.StringIO()
    call_command("close_month", "--period", f"{timezone.now():%Y-%m}", stdout=out, stderr=io.StringIO())
    assert "acme" in out.getvalue()


@pytest.mark.parametrize("period", ABSURD)
def test_finance_export_of_an_absurd_month_is_400(client, period):
    client.force_login(make_user("ops@platform.test", staff=True))
    response = client.get(reverse("finance-export"), {"period": period})
    assert response.status_code == 400
