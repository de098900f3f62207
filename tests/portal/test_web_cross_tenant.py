"""Tenant isolation in the browser: another tenant's ids answer 404 on every id-bearing route.

The route list is read from the URL map, so a new id-bearing route without an entry in
FOREIGN_IDS fails here until it is covered.
"""

import re
from decimal import Decimal

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from alerts.models import AlertDelivery, AlertRule, NotificationChannel
from alerts.services import alert_rule_create, notification_channel_create
from billing.services.quotas import quota_create
from tests import factories

pytestmark = pytest.mark.django_db


def portal_routes() -> list[tuple[str, str, list[str]]]:
    """(url name, route, int kwargs) of every tenant page with an id in its path."""
    found = []

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                route = prefix + str(pattern.pattern)
                ids = re.findall(r"<int:(\w+)>", route)
                if route.startswith("t/") and ids:
                    found.append((pattern.name, route, ids))

    walk(get_resolver().url_patterns)
    return found


@pytest.fixture
def foreign(tenant_a, tenant_b, key_a, key_b):
    """Objects of tenant B (ids a user of A will try) and of A (to mix with B's)."""
    quota_b = quota_create(tenant=tenant_b, api_key=key_b.row, metric="tokens", window="month", limit=Decimal(10))
    quota_a = quota_create(tenant=tenant_a, api_key=key_a.row, metric="tokens", window="month", limit=Decimal(10))
    email = {"recipients": ["x@example.test"]}
    channel_b = notification_channel_create(tenant=tenant_b, kind="email", name="b", config=email)
    channel_a = notification_channel_create(tenant=tenant_a, kind="email", name="a", config=email)
    rule_b = alert_rule_create(tenant=tenant_b, kind="quota", channels=[channel_b], quota_id=quota_b.pk)
    rule_a = alert_rule_create(tenant=tenant_a, kind="quota", channels=[channel_a], quota_id=quota_a.pk)
    return {
        "b": {"key_id": key_b.row.pk, "quota_id": quota_b.pk, "channel_id": channel_b.pk, "rule_id": rule_b.pk},
        "a": {"key_id": key_a.row.pk, "quota_id": quota_a.pk, "channel_id": channel_a.pk, "rule_id": rule_a.pk},
    }


def test_every_id_bearing_route_is_covered(foreign):
    routes = portal_routes()
    assert routes, "no id-bearing portal routes found"
    known = set(foreign["b"])
    for name, route, ids in routes:
        assert set(ids) <= known, f"{name} ({route}) has ids {ids} with no foreign object in this test"


@pytest.mark.parametrize("method", ["get", "post"])
def test_foreign_ids_under_own_tenant_are_404(client, tenant_a, tenant_b, owner_a, foreign, method):
    client.force_login(owner_a)
    for name, _route, ids in portal_routes():
        # All of B's ids, then each of B's ids mixed with A's others.
        variants = [{k: foreign["b"][k] for k in ids}]
        for k in ids:
            if len(ids) > 1:
                variants.append({**{o: foreign["a"][o] for o in ids}, k: foreign["b"][k]})
        for kwargs in variants:
            url = reverse(name, kwargs={"slug": tenant_a.slug, **kwargs})
            response = getattr(client, method)(url)
            assert response.status_code == 404, (method, url, response.status_code)


@pytest.mark.parametrize("method", ["get", "post"])
def test_own_ids_under_foreign_tenant_are_404(client, tenant_a, tenant_b, owner_a, foreign, method):
    client.force_login(owner_a)
    for name, _route, ids in portal_routes():
        for source in ("a", "b"):
            url = reverse(name, kwargs={"slug": tenant_b.slug, **{k: foreign[source][k] for k in ids}})
            response = getattr(client, method)(url)
            assert response.status_code == 404, (method, url, response.status_code)


def test_nothing_changed_after_the_attempts(client, tenant_a, tenant_b, owner_a, key_b, foreign, mailoutbox):
    client.force_login(owner_a)
    channel_b = foreign["b"]["channel_id"]
    client.post(reverse("alert-channel-test", kwargs={"slug": tenant_a.slug, "channel_id": channel_b}))
    assert not AlertDelivery.objects.filter(channel_id=channel_b).exists()  # no test queued
    update = reverse("alert-channel-update", kwargs={"slug": tenant_a.slug, "channel_id": channel_b})
    client.post(update, {"recipients": "me@x.test"})
    assert mailoutbox == []
    client.post(reverse("alert-channel-delete", kwargs={"slug": tenant_a.slug, "channel_id": channel_b}))
    assert NotificationChannel.objects.filter(pk=channel_b).exists()
    for name in ("alert-rule-toggle", "alert-rule-delete"):
        client.post(reverse(name, kwargs={"slug": tenant_a.slug, "rule_id": foreign["b"]["rule_id"]}))
    assert AlertRule.objects.get(pk=foreign["b"]["rule_id"]).enabled is True
    client.post(reverse("key-revoke", kwargs={"slug": tenant_a.slug, "key_id": key_b.row.pk}))
    client.post(reverse("key-revoke", kwargs={"slug": tenant_b.slug, "key_id": key_b.row.pk}))
    key_b.row.refresh_from_db()
    assert key_b.row.revoked_at is None
    assert key_b.post("/api/v1/events", factories.EventBodyFactory()).status_code == 201


def test_usage_filter_with_a_foreign_key_shows_nothing(client, tenant_a, owner_a, key_b):
    client.force_login(owner_a)
    response = client.get(reverse("usage", kwargs={"slug": tenant_a.slug}), {"key": key_b.row.pk})
    assert response.status_code == 200
    assert response.context["rows"] == []
    csv_response = client.get(reverse("usage-csv", kwargs={"slug": tenant_a.slug}), {"key": key_b.row.pk})
    assert csv_response.status_code == 400
