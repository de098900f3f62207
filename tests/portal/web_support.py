"""Fixtures and helpers for the browser portal's tests (Django test client and Chromium).

Users: an owner, admin, finance and viewer of tenant A ("acme"), an owner of tenant B
("globex"), and a staff operator. Usage is recorded through the real ingest service and
rolled up by the real rollup service, so the dashboard reads what production would.
"""

import datetime as dt
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from accounts import services as account_services
from metering.services.ingest import usage_record_batch
from metering.services.rollup import rollup_tenant
from portal.web import reset_limits
from tests import factories

PASSWORD = "correct horse battery staple 42"


def make_user(email: str, *, tenant=None, role: str = "viewer", staff: bool = False):
    user, _ = account_services.user_create(
        email=email, password=PASSWORD, is_staff=staff, tenant=tenant, role=role, actor_label="test"
    )
    return user


@pytest.fixture(autouse=True)
def _fresh_password_reset_counts():
    """The reset form's counts live in the cache (Redis), which outlives a test's transaction;
    login failures (django-axes) are database rows and go with it."""
    if not settings.REDIS_URL:
        cache.clear()
        return
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        stale = list(client.scan_iter(match=f"*:{reset_limits.KEY_PREFIX}:*", count=1000))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


def record(key, events: list[dict]) -> None:
    """Record events for `key` through the ingest service (rated, charged, stored once)."""
    result = usage_record_batch(raw_events=events, api_key=key)
    rejected = [item.error for item in result.items if item.status == "rejected"]
    assert not rejected, rejected


def event(request_id: str, when: dt.datetime, **fields) -> dict:
    body = {
        "request_id": request_id,
        "model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 500,
        "timestamp": when.isoformat(),
    }
    body.update(fields)
    return body


def rollup(tenant) -> None:
    rollup_tenant(tenant_id=tenant.pk)


@pytest.fixture
def owner_a(tenant_a):
    return make_user("owner@acme.test", tenant=tenant_a, role="owner")


@pytest.fixture
def admin_a(tenant_a):
    return make_user("admin@acme.test", tenant=tenant_a, role="admin")


@pytest.fixture
def finance_a(tenant_a):
    return make_user("finance@acme.test", tenant=tenant_a, role="finance")


@pytest.fixture
def viewer_a(tenant_a):
    return make_user("viewer@acme.test", tenant=tenant_a, role="viewer")


@pytest.fixture
def owner_b(tenant_b):
    return make_user("owner@globex.test", tenant=tenant_b, role="owner")


@pytest.fixture
def operator(db):
    return make_user("ops@platform.test", staff=True)


@pytest.fixture
def usage_a(tenant_a, key_a):
    """Three days of tenant A's usage on two keys and two models, rolled up. Returns the figures.

    Per day d (0 = today, 1, 2 days ago) on key_a: (d + 1) gpt-4o requests of 1000 in (200
    cached) + 500 out; and one gpt-4o-mini request of 2000 in + 1000 out on a second key.
    """
    other_key, _ = factories.issue_api_key(tenant_a, name="batch jobs")
    # Halfway through today (tenant_a is UTC), so that no event strays over a midnight.
    now = timezone.now()
    anchor = now - (now - now.replace(hour=0, minute=0, second=0, microsecond=0)) / 2
    for day in range(3):
        when = anchor - dt.timedelta(days=day)
        record(
            key_a.row,
            [event(f"a-{day}-{n}", when - dt.timedelta(seconds=n), cached_input_tokens=200) for n in range(day + 1)],
        )
        record(
            other_key,
            [
                event(
                    f"b-{day}",
                    when - dt.timedelta(seconds=30),
                    model="gpt-4o-mini",
                    input_tokens=2000,
                    output_tokens=1000,
                )
            ],
        )
    rollup(tenant_a)
    # gpt-4o: 800 uncached x 2.5 + 200 cached x 1.25 + 500 x 10 per 1M = 0.00725 per request
    # gpt-4o-mini: 2000 x 0.15 + 1000 x 0.6 per 1M = 0.0009 per request
    return {
        "other_key": other_key,
        "requests": 6 + 3,
        "input_tokens": 6 * 1000 + 3 * 2000,
        "cached_input_tokens": 6 * 200,
        "output_tokens": 6 * 500 + 3 * 1000,
        "cost": 6 * Decimal("0.00725") + 3 * Decimal("0.0009"),
    }
