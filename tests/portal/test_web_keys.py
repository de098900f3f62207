"""API keys in the portal: create (secret once), quotas, revoke -> the API refuses the key."""

from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import ApiKey, AuditLog
from billing.models import Quota
from tests import factories

pytestmark = pytest.mark.django_db


def api(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def create_key(client, tenant, **data):
    form = {"name": "ci runner", "scopes": ["ingest", "read"], **data}
    return client.post(reverse("key-create", kwargs={"slug": tenant.slug}), form)


def test_create_shows_the_secret_once_and_it_works(client, tenant_a, admin_a):
    client.force_login(admin_a)
    response = create_key(client, tenant_a)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    secret = response.context["secret"]
    key = ApiKey.objects.get(tenant=tenant_a, name="ci runner")
    assert f"_{key.prefix}_" in secret
    assert secret in response.content.decode()
    assert 'data-copy="#new-secret"' in response.content.decode()
    # The secret appears nowhere afterwards.
    for url in (
        reverse("keys", kwargs={"slug": tenant_a.slug}),
        reverse("key-detail", kwargs={"slug": tenant_a.slug, "key_id": key.pk}),
    ):
        assert secret not in client.get(url).content.decode()
    assert secret not in key.secret_hash
    # And it is a working key.
    posted = api(secret).post("/api/v1/events", factories.EventBodyFactory(), format="json")
    assert posted.status_code == 201, posted.content
    audit = AuditLog.objects.get(action="api_key.create", target_id=str(key.pk))
    assert audit.actor == admin_a


def test_create_with_scopes_and_a_quota(client, tenant_a, owner_a):
    client.force_login(owner_a)
    response = create_key(
        client,
        tenant_a,
        scopes=["read"],
        quota_limit="250000",
        quota_metric="tokens",
        quota_window="day",
        quota_enforcement="soft",
    )
    assert response.status_code == 200
    key = response.context["key"]
    assert key.scopes == ["read"]
    quota = Quota.objects.get(api_key=key)
    assert (quota.metric, quota.window, quota.limit, quota.enforcement) == ("tokens", "day", Decimal(250000), "soft")
    # A read-only key may not ingest.
    assert (
        api(response.context["secret"]).post("/api/v1/events", factories.EventBodyFactory(), format="json").status_code
        == 403
    )


def test_create_needs_a_scope(client, tenant_a, owner_a):
    client.force_login(owner_a)
    response = create_key(client, tenant_a, scopes=[])
    assert response.status_code == 400
    assert not ApiKey.objects.filter(tenant=tenant_a).exists()


def test_revoke_makes_the_api_refuse_the_key(client, tenant_a, owner_a, key_a):
    client.force_login(owner_a)
    assert key_a.post("/api/v1/events", factories.EventBodyFactory()).status_code == 201
    response = client.post(reverse("key-revoke", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk}))
    assert response.status_code == 302
    refused = key_a.post("/api/v1/events", factories.EventBodyFactory())
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "key_revoked"
    detail = client.get(response["Location"]).content.decode()
    assert "revoked" in detail
    assert AuditLog.objects.filter(action="api_key.revoke", target_id=str(key_a.row.pk), actor=owner_a).exists()
    # Revoking again changes nothing.
    client.post(reverse("key-revoke", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk}))
    assert AuditLog.objects.filter(action="api_key.revoke", target_id=str(key_a.row.pk)).count() == 1


def test_revoke_is_post_only(client, tenant_a, owner_a, key_a):
    client.force_login(owner_a)
    assert client.get(reverse("key-revoke", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk})).status_code == 405


def test_key_detail_shows_its_usage(client, tenant_a, owner_a, key_a, usage_a):
    client.force_login(owner_a)
    response = client.get(reverse("key-detail", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk}))
    usage = response.context["usage"]
    assert usage["requests"] == 6  # key_a's gpt-4o requests; the mini ones are on another key
    assert usage["cost"] == 6 * Decimal("0.00725")
    assert f"tbk_{key_a.row.prefix}_" in response.content.decode()


def test_key_list_shows_last_use(client, tenant_a, owner_a, key_a):
    client.force_login(owner_a)
    page = client.get(reverse("keys", kwargs={"slug": tenant_a.slug})).content.decode()
    assert "never" in page
    key_a.post("/api/v1/events", factories.EventBodyFactory())
    key_a.row.refresh_from_db()
    assert key_a.row.last_used_at is not None
    page = client.get(reverse("keys", kwargs={"slug": tenant_a.slug})).content.decode()
    assert key_a.row.last_used_at.strftime("%Y-%m-%d %H:%M") in page


def test_quota_add_and_remove(client, tenant_a, owner_a, key_a):
    client.force_login(owner_a)
    url = reverse("key-quota-add", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk})
    response = client.post(url, {"metric": "money", "window": "month", "limit": "12.50", "enforcement": "hard"})
    assert response.status_code == 302
    quota = Quota.objects.get(api_key=key_a.row)
    assert quota.limit == Decimal("12.50")
    detail = client.get(reverse("key-detail", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk}))
    assert "12.50" in detail.content.decode()
    client.post(
        reverse("key-quota-delete", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk, "quota_id": quota.pk})
    )
    assert not Quota.objects.filter(api_key=key_a.row).exists()
    assert list(
        AuditLog.objects.filter(tenant=tenant_a, action__startswith="quota.")
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["quota.create", "quota.delete"]


def test_bad_quota_is_refused(client, tenant_a, owner_a, key_a):
    client.force_login(owner_a)
    url = reverse("key-quota-add", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk})
    client.post(url, {"metric": "tokens", "window": "month", "limit": "-1", "enforcement": "hard"})
    client.post(url, {"metric": "tokens", "window": "month", "limit": "1.5", "enforcement": "hard"})
    assert not Quota.objects.filter(api_key=key_a.row).exists()


def test_viewer_and_finance_cannot_create_or_revoke(client, tenant_a, viewer_a, finance_a, key_a):
    for user in (viewer_a, finance_a):
        client.force_login(user)
        assert create_key(client, tenant_a).status_code == 403
        url = reverse("key-revoke", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk})
        assert client.post(url).status_code == 403
    key_a.row.refresh_from_db()
    assert key_a.row.revoked_at is None
    assert ApiKey.objects.filter(tenant=tenant_a).count() == 1


def edit_key(client, tenant, key, **data):
    url = reverse("key-update", kwargs={"slug": tenant.slug, "key_id": key.pk})
    return client.post(url, {"name": "renamed", "scopes": ["read"], **data}, follow=True)


def test_rename_and_narrow_scopes_apply_to_the_next_request(client, tenant_a, owner_a, key_a):
    client.force_login(owner_a)
    assert key_a.post("/api/v1/events", factories.EventBodyFactory()).status_code == 201
    page = edit_key(client, tenant_a, key_a.row).content.decode()
    assert "Key saved" in page and "renamed" in page
    key_a.row.refresh_from_db()
    assert (key_a.row.name, key_a.row.scopes) == ("renamed", ["read"])
    refused = key_a.post("/api/v1/events", factories.EventBodyFactory())
    assert refused.status_code == 403, refused.content  # a read-only key cannot ingest any more
    assert key_a.get("/api/v1/usage").status_code == 200
    audit = AuditLog.objects.get(action="api_key.update", target_id=str(key_a.row.pk))
    assert audit.actor == owner_a
    assert audit.changes == {
        "before": {"name": "test", "scopes": ["ingest", "read"]},
        "after": {"name": "renamed", "scopes": ["read"]},
    }
    # The same values again change nothing and record nothing.
    assert "Nothing to change" in edit_key(client, tenant_a, key_a.row).content.decode()
    assert AuditLog.objects.filter(action="api_key.update").count() == 1


@pytest.mark.parametrize(
    "data",
    [{"scopes": []}, {"scopes": ["admin"]}, {"name": "x" * 101}],
    ids=["no scope", "unknown scope", "long name"],
)
def test_bad_edits_are_refused_and_change_nothing(client, tenant_a, owner_a, key_a, data):
    client.force_login(owner_a)
    page = edit_key(client, tenant_a, key_a.row, **data).content.decode()
    assert "The key was not changed" in page
    key_a.row.refresh_from_db()
    assert (key_a.row.name, key_a.row.scopes) == ("test", ["ingest", "read"])
    assert not AuditLog.objects.filter(action="api_key.update").exists()


def test_a_revoked_key_cannot_be_edited(client, tenant_a, owner_a, key_a):
    client.force_login(owner_a)
    client.post(reverse("key-revoke", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk}))
    page = edit_key(client, tenant_a, key_a.row).content.decode()
    assert "A revoked key cannot be changed." in page
    key_a.row.refresh_from_db()
    assert key_a.row.scopes == ["ingest", "read"]


def test_only_managers_of_the_tenant_edit_keys(client, tenant_a, tenant_b, viewer_a, finance_a, owner_b, key_a):
    for user in (viewer_a, finance_a):
        client.force_login(user)
        url = reverse("key-update", kwargs={"slug": tenant_a.slug, "key_id": key_a.row.pk})
        assert client.post(url, {"name": "x", "scopes": ["read"]}).status_code == 403
    client.force_login(owner_b)
    foreign = reverse("key-update", kwargs={"slug": tenant_b.slug, "key_id": key_a.row.pk})
    assert client.post(foreign, {"name": "x", "scopes": ["read"]}).status_code == 404
    key_a.row.refresh_from_db()
    assert (key_a.row.name, key_a.row.scopes) == ("test", ["ingest", "read"])
