"""set_limits and create_api_key: limits, expiry, allowed models and networks from the shell.

Good values are saved, printed and audited as "cli"; a bad value is a CommandError (exit 1
through manage.py) that names the value, and changes nothing.
"""

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiKey, AuditLog

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def refused(*args: str) -> str:
    """Run a command that must fail; the message manage.py prints (exiting with the error's
    returncode, 1)."""
    with pytest.raises(CommandError) as error:
        run(*args)
    assert error.value.returncode == 1
    return str(error.value)


def audits() -> list[AuditLog]:
    return list(AuditLog.objects.filter(action__in=["api_key.set_controls", "tenant.set_limits"]).order_by("id"))


# --- set_limits: the tenant ------------------------------------------------------------------


def test_tenant_limits_are_set_printed_and_audited(tenant_a):
    out = run("set_limits", "--tenant", "acme", "--rpm", "6000", "--tpm", "2000000")
    assert out.splitlines() == [
        "Tenant acme, changed:",
        "  rpm: 6000",
        "  tpm: 2000000",
        "  max-parallel: none",
    ]
    tenant_a.refresh_from_db()
    assert (tenant_a.rpm_limit, tenant_a.tpm_limit, tenant_a.max_parallel_requests) == (6000, 2_000_000, None)
    (audit,) = audits()
    assert (audit.action, audit.actor_label, audit.actor, audit.tenant) == ("tenant.set_limits", "cli", None, tenant_a)
    assert audit.changes == {
        "before": {"rpm_limit": None, "tpm_limit": None},
        "after": {"rpm_limit": 6000, "tpm_limit": 2_000_000},
    }
    # Options left out stay; "none" clears one.
    out = run("set_limits", "--tenant", "acme", "--tpm", "none", "--max-parallel", "8")
    tenant_a.refresh_from_db()
    assert (tenant_a.rpm_limit, tenant_a.tpm_limit, tenant_a.max_parallel_requests) == (6000, None, 8)
    assert "  max-parallel: 8" in out.splitlines()
    assert audits()[-1].changes == {
        "before": {"tpm_limit": 2_000_000, "max_parallel_requests": None},
        "after": {"tpm_limit": None, "max_parallel_requests": 8},
    }


def test_with_no_option_it_only_prints(tenant_a):
    out = run("set_limits", "--tenant", "acme")
    assert out.splitlines()[0] == "Tenant acme, as set:"
    assert audits() == []
    run("set_limits", "--tenant", "acme", "--rpm", "5")
    assert run("set_limits", "--tenant", "acme", "--rpm", "5").splitlines()[0] == "Tenant acme, unchanged:"
    assert len(audits()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rpm", "0"], "Requests per minute: “0” is not a whole number from 1 to 1,000,000,000"),
        (["--rpm", "-3"], "“-3” is not a whole number"),
        (["--rpm", "1000000001"], "is not a whole number"),
        (["--tpm", "1000000000001"], "Tokens per minute: “1000000000001” is not a whole number"),
        (["--max-parallel", "2.5"], "Parallel requests: “2.5” is not a whole number"),
        (["--rpm", "5", "--tpm", "x"], "“x” is not a whole number"),
        (["--expires-at", "2099-01-01T00:00Z"], "--expires-at only apply to a key: add --key"),
    ],
)
def test_bad_tenant_limits_are_refused(tenant_a, args, message):
    assert message in refused("set_limits", "--tenant", "acme", *args)
    tenant_a.refresh_from_db()
    assert (tenant_a.rpm_limit, tenant_a.tpm_limit, tenant_a.max_parallel_requests) == (None, None, None)
    assert audits() == []


def test_an_unknown_tenant_is_refused(db):
    assert "No tenant with slug 'nope'" in refused("set_limits", "--tenant", "nope", "--rpm", "5")


# --- set_limits: a key ------------------------------------------------------------------------


def test_every_key_control_by_id_then_by_prefix(tenant_b, key_b):
    key = key_b.row  # tenant_b is in Asia/Shanghai
    out = run(
        "set_limits",
        "--tenant",
        "globex",
        "--key",
        str(key.pk),
        "--rpm",
        "600",
        "--tpm",
        "200000",
        "--max-parallel",
        "20",
        "--expires-at",
        "2099-05-01T12:00:00Z",
        "--allowed-models",
        "gpt-4o, gpt-4o-mini*,gpt-4o",
        "--allowed-networks",
        "10.1.2.3/8,2001:db8::1",
    )
    assert out.splitlines() == [
        f"API key {key.pk} (test) of globex, changed:",
        "  rpm: 600",
        "  tpm: 200000",
        "  max-parallel: 20",
        "  expires-at: 2099-05-01T20:00:00+08:00",
        "  allowed-models: gpt-4o,gpt-4o-mini*",
        "  allowed-networks: 10.0.0.0/8,2001:db8::1/128",
    ]
    key.refresh_from_db()
    assert key.expires_at == dt.datetime(2099, 5, 1, 12, tzinfo=dt.UTC)
    assert (key.rpm_limit, key.tpm_limit, key.max_parallel_requests) == (600, 200_000, 20)
    assert (key.allowed_models, key.allowed_networks) == (["gpt-4o", "gpt-4o-mini*"], ["10.0.0.0/8", "2001:db8::1/128"])
    (audit,) = audits()
    assert (audit.action, audit.actor_label, audit.target_id) == ("api_key.set_controls", "cli", str(key.pk))
    assert audit.changes["after"]["expires_at"] == "2099-05-01T12:00:00+00:00"
    assert audit.changes["before"]["allowed_networks"] == []
    # By prefix (bare, or as the portal shows it), "none" clears; the rest stays.
    run("set_limits", "--tenant", "globex", "--key", key.prefix, "--allowed-models", "none", "--rpm", "none")
    out = run("set_limits", "--tenant", "globex", "--key", f"tbk_{key.prefix}_…", "--expires-at", "none")
    assert "  expires-at: none" in out.splitlines()
    assert "  allowed-models: none (every model)" in out.splitlines()
    key.refresh_from_db()
    assert (key.rpm_limit, key.allowed_models, key.expires_at) == (None, [], None)
    assert key.allowed_networks == ["10.0.0.0/8", "2001:db8::1/128"]
    assert [a.changes["after"] for a in audits()[1:]] == [
        {"allowed_models": [], "rpm_limit": None},
        {"expires_at": None},
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rpm", "0"], "“0” is not a whole number"),
        (["--allowed-networks", "10.0.0.0/8,10.0.0.0/33"], "Allowed networks: “10.0.0.0/33” is not an IPv4 or IPv6"),
        (["--allowed-networks", "localhost"], "“localhost” is not an IPv4 or IPv6 network"),
        (["--allowed-models", ",".join(f"m{n}" for n in range(101))], "Allowed models: 101 entries; at most 100"),
        (["--allowed-models", "gpt-4o,gpt 4o"], "“gpt 4o” is not a model name or pattern"),
        (["--expires-at", "2020-01-01T00:00:00Z"], "Expiry: “2020-01-01T00:00:00+00:00” is in the past"),
        (["--expires-at", "2099-01-01T00:00:00"], "“2099-01-01T00:00:00” has no time zone"),
        (["--expires-at", "next week"], "“next week” is not an ISO 8601 date and time"),
    ],
)
def test_bad_key_controls_are_refused(key_a, args, message):
    assert message in refused("set_limits", "--tenant", "acme", "--key", str(key_a.row.pk), "--tpm", "5000", *args)
    key_a.row.refresh_from_db()
    assert (key_a.row.tpm_limit, key_a.row.allowed_models, key_a.row.expires_at) == (None, [], None)
    assert audits() == []


def test_keys_of_other_tenants_and_unknown_keys_are_refused(tenant_a, key_a, key_b):
    for key in (str(key_b.row.pk), key_b.row.prefix, "999999", "nokey"):
        assert f"No API key '{key}' in tenant acme" in refused(
            "set_limits", "--tenant", "acme", "--key", key, "--rpm", "5"
        )
    key_b.row.refresh_from_db()
    assert key_b.row.rpm_limit is None


def test_a_revoked_key_is_refused(key_a):
    from accounts.services import api_key_revoke  # noqa: PLC0415

    api_key_revoke(api_key=key_a.row, actor_label="test")
    assert "A revoked key cannot be changed" in refused(
        "set_limits", "--tenant", "acme", "--key", str(key_a.row.pk), "--rpm", "5"
    )


def test_help(capsys):
    for command in ("set_limits", "create_api_key"):
        with pytest.raises(SystemExit) as exit_info:
            call_command(command, "--help")
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for option in ("--tenant", "--rpm", "--tpm", "--max-parallel", "--expires-at", "--allowed-models"):
            assert option in text, (command, option)
        assert "--allowed-networks" in text


# --- create_api_key ---------------------------------------------------------------------------


def test_create_api_key_with_controls(tenant_a):
    out = run(
        "create_api_key",
        "--tenant",
        "acme",
        "--name",
        "gateway",
        "--rpm",
        "600",
        "--max-parallel",
        "4",
        "--expires-at",
        "2099-01-31T18:00:00+08:00",
        "--allowed-models",
        "gpt-4o*",
        "--allowed-networks",
        "192.168.1.0/24",
    )
    key = ApiKey.objects.get(tenant=tenant_a, name="gateway")
    lines = out.splitlines()
    assert lines[0] == f"API key {key.pk} for acme (scopes: ingest, read):"
    assert lines[1].startswith(f"tbk_{key.prefix}_")
    assert lines[2:] == [
        "Limits and restrictions:",
        "  rpm: 600",
        "  tpm: none",
        "  max-parallel: 4",
        "  expires-at: 2099-01-31T10:00:00+00:00",
        "  allowed-models: gpt-4o*",
        "  allowed-networks: 192.168.1.0/24",
    ]
    assert (key.rpm_limit, key.tpm_limit, key.max_parallel_requests) == (600, None, 4)
    assert key.expires_at == dt.datetime(2099, 1, 31, 10, tzinfo=dt.UTC)
    audit = AuditLog.objects.get(action="api_key.create", target_id=str(key.pk))
    assert audit.actor_label == "cli"
    assert audit.changes == {
        "name": "gateway",
        "scopes": ["ingest", "read"],
        "prefix": key.prefix,
        "rpm_limit": 600,
        "max_parallel_requests": 4,
        "expires_at": "2099-01-31T10:00:00+00:00",
        "allowed_models": ["gpt-4o*"],
        "allowed_networks": ["192.168.1.0/24"],
    }


def test_create_api_key_without_controls_prints_as_before(tenant_a):
    lines = run("create_api_key", "--tenant", "acme").splitlines()
    assert len(lines) == 2
    key = ApiKey.objects.get(tenant=tenant_a)
    assert (key.rpm_limit, key.allowed_models, key.expires_at) == (None, [], None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rpm", "0"], "“0” is not a whole number"),
        (["--tpm", "-1"], "“-1” is not a whole number"),
        (["--max-parallel", "many"], "“many” is not a whole number"),
        (["--allowed-networks", "300.1.1.1"], "“300.1.1.1” is not an IPv4 or IPv6 network"),
        (["--allowed-models", "gpt\u00a04o"], "is not a model name or pattern"),
        (["--expires-at", "2001-01-01T00:00:00+00:00"], "is in the past"),
        (["--expires-at", "2099-01-01"], "has no time zone"),
    ],
)
def test_create_api_key_refuses_bad_controls_and_creates_nothing(tenant_a, args, message):
    assert message in refused("create_api_key", "--tenant", "acme", *args)
    assert not ApiKey.objects.filter(tenant=tenant_a).exists()
    assert not AuditLog.objects.filter(action="api_key.create").exists()
