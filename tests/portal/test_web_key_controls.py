"""Key limits, expiry, allowed models and networks, and tenant limits, set in the portal.

Owners and admins set them (audited, before and after); finance and viewers read the tenant's
limits page only; a bad value comes back beside its field and changes nothing.
"""

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts import services
from accounts.models import ApiKey, AuditLog, Tenant

pytestmark = pytest.mark.django_db

FUTURE = "2099-03-01T09:30:00"
EMPTY = {
    "rpm_limit": "",
    "tpm_limit": "",
    "max_parallel_requests": "",
    "expires_at": "",
    "allowed_models": "",
    "allowed_networks": "",
}
CONTROL_FIELDS = ("rpm_limit", "tpm_limit", "max_parallel_requests", "expires_at", "allowed_models", "allowed_networks")


def controls_url(key: ApiKey, slug: str | None = None) -> str:
    return reverse("key-controls", kwargs={"slug": slug or key.tenant.slug, "key_id": key.pk})


def detail_url(key: ApiKey) -> str:
    return reverse("key-detail", kwargs={"slug": key.tenant.slug, "key_id": key.pk})


def post_controls(client, key: ApiKey, **data):
    return client.post(controls_url(key), {**EMPTY, **data})


def rendered_value(page: str, name: str) -> str:
    """The value attribute of the input named `name`, as the page renders it."""
    match = re.search(rf'<input[^>]*name="{name}"[^>]*>', page)
    assert match, name
    value = re.search(r'value="([^"]*)"', match.group(0))
    return value.group(1) if value else ""


def controls_of(key: ApiKey) -> dict:
    key.refresh_from_db()
    return {field: getattr(key, field) for field in CONTROL_FIELDS}


def limits_of(tenant: Tenant) -> tuple:
    tenant.refresh_from_db()
    return tenant.rpm_limit, tenant.tpm_limit, tenant.max_parallel_requests


NOTHING = {
    "rpm_limit": None,
    "tpm_limit": None,
    "max_parallel_requests": None,
    "expires_at": None,
    "allowed_models": [],
    "allowed_networks": [],
}


# --- A key's controls ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_owners_and_admins_set_every_control_and_it_is_audited(client, tenant_a, key_a, owner_a, admin_a, role):
    user = owner_a if role == "owner" else admin_a
    client.force_login(user)
    response = post_controls(
        client,
        key_a.row,
        rpm_limit="600",
        tpm_limit="200000",
        max_parallel_requests="20",
        expires_at=FUTURE,
        allowed_models="gpt-4o\r\n  gpt-4o-mini*  \r\n\r\ngpt-4o\r\nclaude-[sh]*",
        allowed_networks="10.1.2.3/8\n2001:DB8::/32\n192.0.2.7",
    )
    assert response.status_code == 302
    assert response["Location"] == detail_url(key_a.row)
    expires = dt.datetime(2099, 3, 1, 9, 30, tzinfo=dt.UTC)  # tenant_a's zone is UTC
    assert controls_of(key_a.row) == {
        "rpm_limit": 600,
        "tpm_limit": 200_000,
        "max_parallel_requests": 20,
        "expires_at": expires,
        "allowed_models": ["gpt-4o", "gpt-4o-mini*", "claude-[sh]*"],  # duplicate dropped, order kept
        "allowed_networks": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"],  # normalised
    }
    audit = AuditLog.objects.get(action="api_key.set_controls", target_id=str(key_a.row.pk))
    assert (audit.actor, audit.tenant) == (user, tenant_a)
    assert audit.changes == {
        "before": NOTHING,
        "after": {
            "rpm_limit": 600,
            "tpm_limit": 200_000,
            "max_parallel_requests": 20,
            "expires_at": expires.isoformat(),
            "allowed_models": ["gpt-4o", "gpt-4o-mini*", "claude-[sh]*"],
            "allowed_networks": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"],
        },
    }
    page = client.get(detail_url(key_a.row)).content.decode()
    assert "Limits and restrictions saved" in page
    for shown in ("600", "200,000", "gpt-4o-mini*", "claude-[sh]*", "10.0.0.0/8", "192.0.2.7/32", "2099-03-01 09:30"):
        assert shown in page, shown


def test_one_field_at_a_time_audits_only_what_changed_and_clearing_works(client, key_a, owner_a):
    client.force_login(owner_a)
    post_controls(client, key_a.row, rpm_limit="100", allowed_models="gpt-4o")
    post_controls(client, key_a.row, rpm_limit="120", allowed_models="gpt-4o")
    latest = AuditLog.objects.filter(action="api_key.set_controls").latest("id")
    assert latest.changes == {"before": {"rpm_limit": 100}, "after": {"rpm_limit": 120}}
    # The same values again: nothing written, nothing recorded.
    response = client.post(
        controls_url(key_a.row), {**EMPTY, "rpm_limit": "120", "allowed_models": "gpt-4o"}, follow=True
    )
    assert "Nothing to change" in response.content.decode()
    assert AuditLog.objects.filter(action="api_key.set_controls").count() == 2
    # Empty fields clear the controls.
    post_controls(client, key_a.row)
    assert controls_of(key_a.row) == NOTHING
    latest = AuditLog.objects.filter(action="api_key.set_controls").latest("id")
    assert latest.changes == {
        "before": {"rpm_limit": 120, "allowed_models": ["gpt-4o"]},
        "after": {"rpm_limit": None, "allowed_models": []},
    }


def test_the_expiry_is_typed_and_shown_in_the_tenants_zone(client, tenant_b, key_b, owner_b):
    client.force_login(owner_b)  # tenant_b is in Asia/Shanghai (UTC+8)
    assert post_controls(client, key_b.row, expires_at="2099-03-01T08:00").status_code == 302
    assert controls_of(key_b.row)["expires_at"] == dt.datetime(2099, 3, 1, 0, 0, tzinfo=dt.UTC)
    page = client.get(detail_url(key_b.row)).content.decode()
    assert rendered_value(page, "expires_at") == "2099-03-01T08:00:00"
    assert "2099-03-01 08:00:00" in page  # the facts, in the same zone


BAD_VALUES = [
    ("rpm_limit", "0", "is not a whole number from 1 to 1,000,000,000"),
    ("rpm_limit", "-5", "is not a whole number"),
    ("rpm_limit", "1000000001", "is not a whole number"),
    ("rpm_limit", "1.5", "is not a whole number"),
    ("rpm_limit", "ten", "is not a whole number"),
    ("tpm_limit", "0", "is not a whole number from 1 to 1,000,000,000,000"),
    ("tpm_limit", "1000000000001", "is not a whole number"),
    ("tpm_limit", "1e6", "is not a whole number"),
    ("max_parallel_requests", "0", "is not a whole number"),
    ("max_parallel_requests", "-1", "is not a whole number"),
    ("max_parallel_requests", "1000000001", "is not a whole number"),
    ("allowed_networks", "10.0.0.0/8\n10.0.0.0/33", "10.0.0.0/33"),
    ("allowed_networks", "intranet", "intranet"),
    ("allowed_networks", "fe80::1%eth0", "fe80::1%eth0"),
    ("expires_at", "2020-01-01T00:00", "is in the past"),
    ("expires_at", "tomorrow", "Enter a valid date/time"),
    ("allowed_models", "\n".join(f"model-{n}" for n in range(101)), "101 entries; at most 100"),
    ("allowed_models", "gpt-4o\ngpt 4o", "gpt 4o"),
    ("allowed_models", "gpt-4o\tmini", "is not a model name or pattern"),
    ("allowed_models", "x" * 201, "is not a model name or pattern"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_VALUES, ids=[f"{f}={v[:20]!r}" for f, v, _ in BAD_VALUES])
def test_a_bad_value_is_a_form_error_and_changes_nothing(client, key_a, owner_a, field, value, message):
    client.force_login(owner_a)
    services.api_key_set_controls(
        api_key=key_a.row, **{**NOTHING, "rpm_limit": 5, "allowed_models": ["gpt-4o"]}, actor_label="test"
    )
    before = controls_of(key_a.row)
    audits = AuditLog.objects.count()
    # Every other field valid and different: nothing of the post may be saved.
    good = {"rpm_limit": "7", "tpm_limit": "9000", "max_parallel_requests": "3", "expires_at": FUTURE}
    good |= {"allowed_models": "o3-mini", "allowed_networks": "10.0.0.0/8"}
    response = client.post(controls_url(key_a.row), {**good, field: value})
    assert response.status_code == 400
    errors = response.context["controls_form"].errors
    assert list(errors) == [field]
    assert message in " ".join(errors[field])
    assert message in response.content.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert controls_of(key_a.row) == before
    assert AuditLog.objects.count() == audits


def test_an_expired_keys_page_says_so_and_its_other_controls_can_still_change(client, tenant_a, key_a, owner_a):
    past = timezone.now() - dt.timedelta(days=1)
    ApiKey.objects.filter(pk=key_a.row.pk).update(expires_at=past.replace(microsecond=0))
    client.force_login(owner_a)
    detail = client.get(detail_url(key_a.row))
    assert detail.context["key"].expired is True
    assert "expired" in detail.content.decode()
    listing = client.get(reverse("keys", kwargs={"slug": tenant_a.slug})).content.decode()
    assert "expired" in listing
    # The form posts the (past) expiry back unchanged: accepted, only the limit changes.
    data = {**EMPTY, "expires_at": rendered_value(detail.content.decode(), "expires_at"), "rpm_limit": "50"}
    assert client.post(controls_url(key_a.row), data).status_code == 302
    assert controls_of(key_a.row)["rpm_limit"] == 50
    assert controls_of(key_a.row)["expires_at"] == past.replace(microsecond=0)
    # Moving it to another past time is refused.
    data["expires_at"] = "2020-01-01T00:00"
    assert client.post(controls_url(key_a.row), data).status_code == 400


def test_a_revoked_key_keeps_its_controls(client, key_a, owner_a):
    services.api_key_revoke(api_key=key_a.row, actor_label="test")
    client.force_login(owner_a)
    response = client.post(controls_url(key_a.row), {**EMPTY, "rpm_limit": "10"}, follow=True)
    assert "A revoked key cannot be changed." in response.content.decode()
    assert controls_of(key_a.row) == NOTHING
    assert not AuditLog.objects.filter(action="api_key.set_controls").exists()


def test_finance_and_viewers_cannot_set_key_controls(client, key_a, finance_a, viewer_a):
    for user in (finance_a, viewer_a):
        client.force_login(user)
        assert post_controls(client, key_a.row, rpm_limit="10").status_code == 403
    assert controls_of(key_a.row) == NOTHING


def test_operators_read_a_keys_controls_but_cannot_change_them(client, tenant_a, key_a, operator):
    client.force_login(operator)  # staff: every tenant's pages, read-only
    page = client.get(detail_url(key_a.row)).content.decode()
    assert 'id="key-controls"' in page and 'id="key-controls-form"' not in page
    assert post_controls(client, key_a.row, rpm_limit="10").status_code == 403
    assert limits_post(client, tenant_a, rpm_limit="10").status_code == 403
    assert controls_of(key_a.row) == NOTHING
    assert limits_of(tenant_a) == (None, None, None)


def test_another_tenants_key_is_404(client, tenant_b, key_a, owner_b, owner_a):
    client.force_login(owner_b)
    assert client.post(controls_url(key_a.row, slug=tenant_b.slug), {**EMPTY, "rpm_limit": "10"}).status_code == 404
    client.force_login(owner_a)
    foreign = reverse("key-controls", kwargs={"slug": tenant_b.slug, "key_id": key_a.row.pk})
    assert client.post(foreign, {**EMPTY, "rpm_limit": "10"}).status_code == 404  # not a member of B
    assert controls_of(key_a.row) == NOTHING


def test_controls_are_post_only(client, key_a, owner_a):
    client.force_login(owner_a)
    assert client.get(controls_url(key_a.row)).status_code == 405


def test_the_key_list_shows_limits_restrictions_and_expiry(client, tenant_a, key_a, owner_a):
    services.api_key_set_controls(
        api_key=key_a.row,
        **{
            **NOTHING,
            "rpm_limit": 600,
            "tpm_limit": 200_000,
            "max_parallel_requests": 20,
            "allowed_models": ["gpt-4o", "o3-mini"],
            "allowed_networks": ["10.0.0.0/8"],
            "expires_at": dt.datetime(2099, 1, 2, 3, 4, tzinfo=dt.UTC),
        },
        actor_label="test",
    )
    client.force_login(owner_a)
    page = client.get(reverse("keys", kwargs={"slug": tenant_a.slug})).content.decode()
    for shown in (
        "600 RPM",
        "200,000 TPM",
        "20 parallel",
        "2 models",
        "1 network",
        "2099-01-02 03:04",
        "gpt-4o, o3-mini",
    ):
        assert shown in page, shown


# --- Tenant limits ----------------------------------------------------------------------------


def limits_post(client, tenant, **data):
    form = {"rpm_limit": "", "tpm_limit": "", "max_parallel_requests": "", **data}
    return client.post(reverse("limits-update", kwargs={"slug": tenant.slug}), form)


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_owners_and_admins_set_the_tenant_limits(client, tenant_a, owner_a, admin_a, role):
    user = owner_a if role == "owner" else admin_a
    client.force_login(user)
    response = limits_post(client, tenant_a, rpm_limit="6000", tpm_limit="1000000000000", max_parallel_requests="50")
    assert response.status_code == 302
    assert limits_of(tenant_a) == (6000, 10**12, 50)
    audit = AuditLog.objects.get(action="tenant.set_limits")
    assert (audit.actor, audit.tenant, audit.target_id) == (user, tenant_a, str(tenant_a.pk))
    assert audit.changes == {
        "before": {"rpm_limit": None, "tpm_limit": None, "max_parallel_requests": None},
        "after": {"rpm_limit": 6000, "tpm_limit": 10**12, "max_parallel_requests": 50},
    }
    page = client.get(response["Location"]).content.decode()
    assert "Tenant limits saved" in page and "6,000" in page and "1,000,000,000,000" in page
    limits_post(client, tenant_a, rpm_limit="6000")
    assert limits_of(tenant_a) == (6000, None, None)
    latest = AuditLog.objects.filter(action="tenant.set_limits").latest("id")
    assert latest.changes["after"] == {"tpm_limit": None, "max_parallel_requests": None}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rpm_limit", "0"),
        ("rpm_limit", "-1"),
        ("rpm_limit", "1000000001"),
        ("rpm_limit", "12.5"),
        ("tpm_limit", "1000000000001"),
        ("tpm_limit", "lots"),
        ("max_parallel_requests", "0"),
    ],
)
def test_bad_tenant_limits_are_form_errors_and_change_nothing(client, tenant_a, owner_a, field, value):
    client.force_login(owner_a)
    response = limits_post(client, tenant_a, **{"rpm_limit": "10", "tpm_limit": "10", field: value})
    assert response.status_code == 400
    assert list(response.context["form"].errors) == [field]
    assert "is not a whole number" in response.content.decode()
    assert limits_of(tenant_a) == (None, None, None)
    assert not AuditLog.objects.filter(action="tenant.set_limits").exists()


def test_finance_and_viewers_read_the_limits_but_cannot_change_them(client, tenant_a, key_a, finance_a, viewer_a):
    services.tenant_set_limits(tenant=tenant_a, rpm_limit=6000, tpm_limit=None, max_parallel_requests=None)
    services.api_key_set_controls(api_key=key_a.row, **{**NOTHING, "rpm_limit": 600}, actor_label="test")
    for user in (finance_a, viewer_a):
        client.force_login(user)
        page = client.get(reverse("limits", kwargs={"slug": tenant_a.slug}))
        assert page.status_code == 200
        text = page.content.decode()
        assert "6,000" in text and "600 RPM" in text
        assert 'id="limits-form"' not in text
        assert limits_post(client, tenant_a, rpm_limit="1").status_code == 403
    assert limits_of(tenant_a) == (6000, None, None)
    assert AuditLog.objects.filter(action="tenant.set_limits").count() == 1


def test_tenant_limits_of_another_tenant_are_404(client, tenant_b, owner_a):
    client.force_login(owner_a)
    assert client.get(reverse("limits", kwargs={"slug": tenant_b.slug})).status_code == 404
    assert limits_post(client, tenant_b, rpm_limit="1").status_code == 404
    assert limits_of(tenant_b) == (None, None, None)


def test_managers_see_the_forms(client, tenant_a, key_a, owner_a):
    client.force_login(owner_a)
    assert 'id="limits-form"' in client.get(reverse("limits", kwargs={"slug": tenant_a.slug})).content.decode()
    assert 'id="key-controls-form"' in client.get(detail_url(key_a.row)).content.decode()


@pytest.mark.parametrize("name", ["limits", "keys"])
def test_chinese_limit_pages(client, settings, tenant_a, key_a, owner_a, name):
    services.api_key_set_controls(api_key=key_a.row, **{**NOTHING, "max_parallel_requests": 3}, actor_label="test")
    client.force_login(owner_a)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    page = client.get(reverse(name, kwargs={"slug": tenant_a.slug})).content.decode()
    assert "限流" in page and "并发 3" in page
    assert "Requests per minute" not in page and "no limit" not in page


def test_chinese_form_errors(client, settings, key_a, owner_a):
    client.force_login(owner_a)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    response = post_controls(client, key_a.row, rpm_limit="0")
    assert "每分钟请求数\N{FULLWIDTH COLON}" in response.content.decode()
    assert "不是 1 到 1,000,000,000 之间的整数" in response.content.decode()
