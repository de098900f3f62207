"""The usage explorer and its CSV with absurd dates: a form error or a 400, never a 500."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db

ABSURD = [
    {"range": "custom", "start": "0001-01-01", "end": "0001-01-05"},
    {"range": "custom", "start": "9999-12-25", "end": "9999-12-31"},
    {"start": "1999-12-31", "end": "2000-01-02"},
]


@pytest.mark.parametrize("params", ABSURD)
@pytest.mark.parametrize("page", ["usage", "dashboard"])
def test_pages_show_a_range_error(client, tenant_b, owner_b, params, page):
    client.force_login(owner_b)  # Asia/Shanghai: its local midnight of 0001-01-01 is in year 0, UTC

    response = client.get(reverse(page, kwargs={"slug": tenant_b.slug}), params)

    assert response.status_code == 200
    assert "Dates must be from" in response.context["range_error"]
    assert response.context["day_range"].preset == "30"  # the default range is shown instead


@pytest.mark.parametrize("params", ABSURD)
def test_csv_answers_400(client, tenant_b, owner_b, params):
    client.force_login(owner_b)

    response = client.get(reverse("usage-csv", kwargs={"slug": tenant_b.slug}), params)

    assert response.status_code == 400
    assert "Dates must be from" in response.content.decode()


def test_a_range_a_year_ahead_is_still_a_range(client, tenant_b, owner_b):
    client.force_login(owner_b)
    end = (timezone.now() + dt.timedelta(days=360)).date()
    params = {"range": "custom", "start": (end - dt.timedelta(days=6)).isoformat(), "end": end.isoformat()}

    response = client.get(reverse("usage-csv", kwargs={"slug": tenant_b.slug}), params)

    assert response.status_code == 200
