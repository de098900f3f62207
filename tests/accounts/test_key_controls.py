"""accounts.key_controls (the one judge of limits, expiry, models and networks), the
services that call it whatever the caller, and the admin's forms that call it too."""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import translation

from accounts import key_controls, services
from accounts.models import ApiKey, AuditLog, Tenant

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _english():
    """The messages are translated when read: in English here, whatever an earlier test left active."""
    with translation.override("en"):
        yield


def refusal(check, *args, **kwargs) -> str:
    with pytest.raises(ValidationError) as error:
        check(*args, **kwargs)
    return " ".join(error.value.messages)


# --- Limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "top"), [("rpm_limit", 10**9), ("tpm_limit", 10**12), ("max_parallel_requests", 10**9)]
)
def test_limits_run_from_one_to_their_maximum(field, top):
    for good in (1, top, "1", f"{top}", f" {top} ", 42):
        assert key_controls.clean_limit(field, good) == int(str(good).strip())
    for empty in (None, "", "  "):
        assert key_controls.clean_limit(field, empty) is None
    for bad in (0, -1, top + 1, "0", "-1", str(top + 1), "1.5", "1e3", "+5", "1,000", "٣", True, 2.0, "9" * 5000):
        assert "is not a whole number from 1 to" in refusal(key_controls.clean_limit, field, bad), bad


def test_a_refused_value_is_quoted_and_cut_short():
    message = refusal(key_controls.clean_limit, "rpm_limit", "9" * 5000)
    assert message.startswith("Requests per minute: “999")
    assert len(message) < 200


# --- Allowed models ---------------------------------------------------------------------------


def test_models_keep_their_order_without_duplicates():
    given = ["gpt-4o", "gpt-4o-mini*", "gpt-4o", "claude-[sh]?*", "o3-mini"]
    assert key_controls.clean_models(given) == ["gpt-4o", "gpt-4o-mini*", "claude-[sh]?*", "o3-mini"]
    assert key_controls.clean_models([]) == []
    assert key_controls.clean_models(["x" * 200]) == ["x" * 200]
    assert len(key_controls.clean_models([f"m{n}" for n in range(100)] + ["m0"] * 50)) == 100


@pytest.mark.parametrize(
    "bad", ["", "x" * 201, "gpt 4o", " gpt-4o", "gpt-4o\n", "gpt\t4o", "gpt\u00a04o", "gpt\x00", "gpt\u200b4o"]
)
def test_a_bad_model_pattern_is_named(bad):
    message = refusal(key_controls.clean_models, ["gpt-4o", bad])
    assert message.startswith("Allowed models: “")
    assert "is not a model name or pattern" in message


def test_at_most_a_hundred_models():
    assert "101 entries; at most 100" in refusal(key_controls.clean_models, [f"m{n}" for n in range(101)])
    assert "is not a list" in refusal(key_controls.clean_models, "gpt-4o")
    assert "is not a model name" in refusal(key_controls.clean_models, [7])


# --- Allowed networks -------------------------------------------------------------------------


def test_networks_are_normalised_and_deduplicated():
    given = ["10.1.2.3/8", "10.0.0.0/8", "192.0.2.7", "2001:DB8::1/32", "::1", "0.0.0.0/0"]
    assert key_controls.clean_networks(given) == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128", "0.0.0.0/0"]


@pytest.mark.parametrize(
    "bad", ["10.0.0.0/33", "256.1.1.1", "intranet", "", " 10.0.0.1", "fe80::1%eth0", "10.0.0.0/8/8"]
)
def test_a_bad_network_is_named(bad):
    message = refusal(key_controls.clean_networks, ["192.168.0.0/16", bad])
    assert message == f"Allowed networks: “{bad}” is not an IPv4 or IPv6 network (e.g. 10.0.0.0/8) or address."


def test_at_most_a_hundred_networks():
    many = [f"10.0.{n}.0/24" for n in range(101)]
    assert "Allowed networks: 101 entries; at most 100" in refusal(key_controls.clean_networks, many)
    assert len(key_controls.clean_networks(many[:100])) == 100
    assert "is not an IPv4" in refusal(key_controls.clean_networks, [167772160])  # an int is not an address text


# --- Expiry -----------------------------------------------------------------------------------


def test_an_expiry_must_be_in_the_future_unless_it_stays_as_it_was():
    later = NOW + dt.timedelta(seconds=1, microseconds=500)
    assert key_controls.clean_expires_at(later, now=NOW) == NOW + dt.timedelta(seconds=1)
    assert key_controls.clean_expires_at(None, now=NOW) is None
    assert "is in the past" in refusal(key_controls.clean_expires_at, NOW, now=NOW)
    assert "is in the past" in refusal(key_controls.clean_expires_at, NOW - dt.timedelta(days=1), now=NOW)
    past = NOW - dt.timedelta(days=1)
    assert key_controls.clean_expires_at(past, now=NOW, current=past.replace(microsecond=7)) == past
    other_past = past - dt.timedelta(hours=1)
    assert "is in the past" in refusal(key_controls.clean_expires_at, other_past, now=NOW, current=past)


def test_an_expiry_is_aware_and_kept_in_utc():
    shanghai = dt.timezone(dt.timedelta(hours=8))
    value = key_controls.clean_expires_at(dt.datetime(2099, 1, 1, 8, tzinfo=shanghai), now=NOW)
    assert (value, value.utcoffset()) == (dt.datetime(2099, 1, 1, tzinfo=dt.UTC), dt.timedelta(0))
    assert "has no time zone" in refusal(key_controls.clean_expires_at, dt.datetime(2099, 1, 1), now=NOW)


def test_expiry_text_is_iso_8601_with_a_zone():
    assert key_controls.parse_expires_at("2099-01-31T18:00:00+08:00") == dt.datetime(2099, 1, 31, 10, tzinfo=dt.UTC)
    assert key_controls.parse_expires_at("2099-01-31T10:00Z") == dt.datetime(2099, 1, 31, 10, tzinfo=dt.UTC)
    assert key_controls.parse_expires_at("  ") is None
    assert "has no time zone" in refusal(key_controls.parse_expires_at, "2099-01-31T18:00")
    assert "is not an ISO 8601 date and time" in refusal(key_controls.parse_expires_at, "31/01/2099")


def test_every_field_error_at_once():
    with pytest.raises(ValidationError) as error:
        key_controls.clean_key_controls(
            expires_at=NOW,
            allowed_models=["a b"],
            allowed_networks=["nowhere"],
            rpm_limit=0,
            tpm_limit=5,
            max_parallel_requests="x",
            now=NOW,
        )
    assert sorted(error.value.message_dict) == [
        "allowed_models",
        "allowed_networks",
        "expires_at",
        "max_parallel_requests",
        "rpm_limit",
    ]


# --- The services judge every caller's values -------------------------------------------------


def controls(**given) -> dict:
    base = {
        "expires_at": None,
        "allowed_models": [],
        "allowed_networks": [],
        "rpm_limit": None,
        "tpm_limit": None,
        "max_parallel_requests": None,
    }
    return {**base, **given}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad",
    [
        {"rpm_limit": 0},
        {"tpm_limit": 10**12 + 1},
        {"max_parallel_requests": -2},
        {"allowed_networks": ["10.0.0.0/33"]},
        {"allowed_models": ["a b"]},
        {"expires_at": NOW - dt.timedelta(days=3650)},
    ],
)
def test_the_key_service_refuses_bad_values_whoever_calls(key_a, bad):
    with pytest.raises(ValidationError) as error:
        services.api_key_set_controls(api_key=key_a.row, **controls(**bad), actor_label="test")
    assert list(error.value.message_dict) == list(bad)
    with pytest.raises(ValidationError):
        services.api_key_create(tenant=key_a.row.tenant, name="x", **bad, actor_label="test")
    key_a.row.refresh_from_db()
    assert {field: getattr(key_a.row, field) for field in key_controls.KEY_CONTROL_FIELDS} == controls()
    assert ApiKey.objects.count() == 1
    assert not AuditLog.objects.filter(action="api_key.set_controls").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [{"rpm_limit": 0}, {"tpm_limit": -1}, {"max_parallel_requests": 10**9 + 1}])
def test_the_tenant_service_refuses_bad_values(tenant_a, bad):
    limits = {"rpm_limit": None, "tpm_limit": None, "max_parallel_requests": None}
    with pytest.raises(ValidationError):
        services.tenant_set_limits(tenant=tenant_a, **{**limits, **bad}, actor_label="test")
    tenant_a.refresh_from_db()
    assert (tenant_a.rpm_limit, tenant_a.tpm_limit, tenant_a.max_parallel_requests) == (None, None, None)
    assert not AuditLog.objects.filter(action="tenant.set_limits").exists()


@pytest.mark.django_db
def test_the_database_refuses_zero_even_past_the_services(key_a):
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=key_a.row.pk).update(rpm_limit=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        Tenant.objects.filter(pk=key_a.row.tenant_id).update(tpm_limit=0)


# --- The admin's forms ------------------------------------------------------------------------


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@platform.test", "a long enough passphrase 7")


def admin_key_post(client, key: ApiKey, **fields):
    data = {
        "tenant": key.tenant_id,
        "name": key.name,
        "scopes": '["ingest", "read"]',
        "revoked_at_0": "",
        "revoked_at_1": "",
        "expires_at_0": "",
        "expires_at_1": "",
        "allowed_models": "[]",
        "allowed_networks": "[]",
        "rpm_limit": "",
        "tpm_limit": "",
        "max_parallel_requests": "",
        **fields,
    }
    return client.post(f"/admin/accounts/apikey/{key.pk}/change/", data)


@pytest.mark.django_db
def test_the_admin_checks_and_normalises_key_controls(client, key_a, superuser):
    client.force_login(superuser)
    listing = client.get("/admin/accounts/apikey/").content.decode()
    assert "column-rpm_limit" in listing and "column-expires_at" in listing
    response = admin_key_post(client, key_a.row, allowed_networks='["10.0.0.0/33"]', rpm_limit="0")
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "“10.0.0.0/33” is not an IPv4 or IPv6 network" in errors["allowed_networks"][0]
    assert "is not a whole number" in errors["rpm_limit"][0]
    response = admin_key_post(
        client,
        key_a.row,
        allowed_networks='["10.1.2.3/8", "10.0.0.0/8"]',
        allowed_models='["gpt-4o", "gpt-4o"]',
        rpm_limit="600",
        expires_at_0="2099-01-01",
        expires_at_1="00:00:00",
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    key_a.row.refresh_from_db()
    assert (key_a.row.allowed_networks, key_a.row.allowed_models) == (["10.0.0.0/8"], ["gpt-4o"])
    assert (key_a.row.rpm_limit, key_a.row.expires_at) == (600, dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    response = admin_key_post(client, key_a.row, allowed_models="", expires_at_0="2001-01-01", expires_at_1="00:00")
    assert "is in the past" in response.context["adminform"].form.errors["expires_at"][0]


@pytest.mark.django_db
def test_the_admin_checks_tenant_limits(client, tenant_a, superuser):
    client.force_login(superuser)
    assert "column-rpm_limit" in client.get("/admin/accounts/tenant/").content.decode()
    page = client.get(f"/admin/accounts/tenant/{tenant_a.pk}/change/")
    form = page.context["adminform"].form
    data = {name: ("" if value is None else value) for name, value in form.initial.items() if name in form.fields}
    data |= {"price_plan": tenant_a.price_plan_id, "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"}
    response = client.post(f"/admin/accounts/tenant/{tenant_a.pk}/change/", {**data, "tpm_limit": "1000000000001"})
    assert response.status_code == 200
    assert "is not a whole number" in response.context["adminform"].form.errors["tpm_limit"][0]
    response = client.post(f"/admin/accounts/tenant/{tenant_a.pk}/change/", {**data, "tpm_limit": "5000"})
    assert response.status_code == 302
    tenant_a.refresh_from_db()
    assert tenant_a.tpm_limit == 5000


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_expiry_at_the_ends_of_the_calendar_is_an_error_not_a_crash(text):
    with pytest.raises(ValidationError, match="out of range"):
        key_controls.parse_expires_at(text)
