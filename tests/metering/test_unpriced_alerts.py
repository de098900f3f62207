"""Unpriced usage is never silent: the operators' page, the gauge, a WARNING and one staff email
per model per day (to a real SMTP server on 127.0.0.1)."""

import datetime as dt
import logging
import threading

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from metering import tasks
from metering.models import UnpricedUsageNotice
from metering.services.unpriced import unpriced_usage_check
from tests.assertions import metric_value
from tests.factories import EventBodyFactory
from tests.notify_servers import smtp_server  # noqa: F401 - the local SMTP server fixture
from tests.portal.web_support import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _gauge_uncached(settings):
    settings.UNPRICED_GAUGE_SECONDS = 0


def _unpriced(cred, count: int, model: str) -> None:
    when = (timezone.now() - dt.timedelta(days=2)).isoformat()
    events = [EventBodyFactory(model=model, timestamp=when) for _ in range(count)]
    response = cred.post("/api/v1/events/batch", {"events": events})
    assert response.json()["accepted"] == count


def test_the_ops_page_counts_unpriced_events_per_tenant_and_model(client, operator, key_a, key_b, tenant_a, tenant_b):
    _unpriced(key_a, 3, "mystery-1")
    _unpriced(key_b, 1, "mystery-1")
    _unpriced(key_a, 2, "mystery-2")
    client.force_login(operator)
    response = client.get(reverse("ops-tenants"))
    assert response.status_code == 200
    rows = {(row["tenant"].slug, row["usage"].model): row["usage"] for row in response.context["unpriced"]}
    assert {key: (usage.events, usage.recent) for key, usage in rows.items()} == {
        (tenant_a.slug, "mystery-1"): (3, 3),
        (tenant_b.slug, "mystery-1"): (1, 1),
        (tenant_a.slug, "mystery-2"): (2, 2),
    }
    page = response.content.decode()
    assert 'id="unpriced-usage"' in page
    assert "rerate_unpriced" in page


def test_the_ops_page_has_no_unpriced_section_when_all_is_priced(client, operator, key_a):
    key_a.post("/api/v1/events", EventBodyFactory())
    client.force_login(operator)
    response = client.get(reverse("ops-tenants"))
    assert response.context["unpriced"] == []
    assert 'id="unpriced-usage"' not in response.content.decode()


def test_the_gauge_reports_what_is_still_unpriced(key_a, key_b):
    assert metric_value("tokenbill_unpriced_events_pending") == 0
    _unpriced(key_a, 3, "mystery-1")
    _unpriced(key_b, 2, "mystery-2")
    assert metric_value("tokenbill_unpriced_events_pending") == 5
    assert metric_value("tokenbill_unpriced_models") == 2


def test_the_check_warns_and_emails_staff_once_per_model_per_day(key_a, smtp_server, caplog):  # noqa: F811
    make_user("ops@platform.test", staff=True)
    make_user("viewer@acme.test")  # not staff: never emailed
    _unpriced(key_a, 3, "mystery-1")
    _unpriced(key_a, 1, "mystery-2")

    with caplog.at_level(logging.WARNING, logger="metering.services.unpriced"):
        assert tasks.unpriced_usage_check() == 2
    assert "4 event(s) of 2 model(s) not charged (mystery-1=3, mystery-2=1)" in caplog.text
    (mail,) = smtp_server.mails
    assert mail.recipients == ["ops@platform.test"]
    assert "mystery-1: 3 event(s)" in mail.body
    assert "mystery-2: 1 event(s)" in mail.body
    assert "rerate_unpriced" in mail.body

    # Run again the same day: the warning again, no second email.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="metering.services.unpriced"):
        assert tasks.unpriced_usage_check() == 0
    assert "not charged" in caplog.text
    assert len(smtp_server.mails) == 1

    # A new model the same day is told about alone.
    _unpriced(key_a, 1, "mystery-3")
    assert unpriced_usage_check().notified == ["mystery-3"]
    assert len(smtp_server.mails) == 2
    assert "mystery-1" not in smtp_server.mails[-1].body

    # The next day, what is still unpriced is told again, once.
    tomorrow = timezone.now() + dt.timedelta(days=1)
    assert unpriced_usage_check(now=tomorrow).notified == ["mystery-1", "mystery-2", "mystery-3"]
    assert unpriced_usage_check(now=tomorrow).notified == []
    assert len(smtp_server.mails) == 3


def test_nothing_unpriced_sends_nothing(key_a, smtp_server, caplog):  # noqa: F811
    make_user("ops@platform.test", staff=True)
    key_a.post("/api/v1/events", EventBodyFactory())
    with caplog.at_level(logging.WARNING, logger="metering.services.unpriced"):
        assert unpriced_usage_check().events == 0
    assert caplog.text == ""
    assert smtp_server.mails == []


def test_a_failed_send_leaves_the_model_for_the_next_run(key_a, smtp_server, settings):  # noqa: F811
    make_user("ops@platform.test", staff=True)
    _unpriced(key_a, 1, "mystery-1")
    settings.EMAIL_PORT = 1  # nothing listens there
    with pytest.raises(OSError):
        unpriced_usage_check()
    assert not UnpricedUsageNotice.objects.exists()
    settings.EMAIL_PORT = smtp_server.port
    assert unpriced_usage_check().notified == ["mystery-1"]
    assert len(smtp_server.mails) == 1


@pytest.mark.django_db(transaction=True)
def test_two_checks_at_once_send_one_email(key_a, smtp_server):  # noqa: F811
    make_user("ops@platform.test", staff=True)
    _unpriced(key_a, 2, "mystery-1")
    barrier, errors = threading.Barrier(3), []

    def run() -> None:
        try:
            barrier.wait(timeout=30)
            unpriced_usage_check()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(smtp_server.mails) == 1
