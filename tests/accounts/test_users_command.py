"""create_user: password validation, staff who are not superusers, the operators group."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from accounts.services import OPERATORS_GROUP

pytestmark = pytest.mark.django_db

GOOD_PASSWORD = "a long and unusual passphrase 7"


def create_user(*args: str) -> str:
    out = StringIO()
    call_command("create_user", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("password", "complaint"),
    [
        ("Sh0rt-pw", "too short"),
        ("password1234", "too common"),
        ("804913572648", "entirely numeric"),
        ("alice.wonder@example.test", "too similar"),
    ],
)
def test_a_weak_password_is_refused_and_creates_nothing(password, complaint):
    with pytest.raises(CommandError, match=complaint) as refused:
        create_user("--email", "alice.wonder@example.test", "--password", password)
    assert str(refused.value).startswith("password: ")
    assert not get_user_model().objects.filter(username="alice.wonder@example.test").exists()


def test_a_strong_password_is_accepted():
    out = create_user("--email", "alice@example.test", "--password", GOOD_PASSWORD)
    assert "alice@example.test created" in out
    assert get_user_model().objects.get(username="alice@example.test").check_password(GOOD_PASSWORD)


def test_staff_are_operators_not_superusers(client):
    out = create_user("--email", "ops2@example.test", "--staff", "--password", GOOD_PASSWORD)
    assert "(staff, operators group)" in out
    user = get_user_model().objects.get(username="ops2@example.test")
    assert user.is_staff and not user.is_superuser
    assert list(user.groups.values_list("name", flat=True)) == [OPERATORS_GROUP]
    client.force_login(user)
    # The operations pages (is_staff) and the admin, read-only where operators only read.
    assert client.get(reverse("ops-tenants")).status_code == 200
    assert client.get(reverse("ops-audit")).status_code == 200
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/accounts/tenant/").status_code == 200
    assert client.get("/admin/billing/wallet/").status_code == 200
    assert client.get("/admin/axes/accessattempt/").status_code == 200
    assert client.get("/admin/accounts/tenant/add/").status_code == 403
    assert client.get("/admin/auth/user/add/").status_code == 403
    assert client.get("/admin/auth/group/").status_code == 403


def test_superuser_is_explicit():
    out = create_user("--email", "root@example.test", "--superuser", "--password", GOOD_PASSWORD)
    assert "(superuser)" in out
    user = get_user_model().objects.get(username="root@example.test")
    assert user.is_staff and user.is_superuser
    assert not user.groups.exists()


def test_the_operators_group_exists_after_migrate_with_its_permissions():
    group = Group.objects.get(name=OPERATORS_GROUP)
    perms = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}
    for wanted in (
        "accounts.view_tenant",
        "accounts.view_auditlog",
        "billing.view_ledgerentry",
        "invoicing.view_invoice",
        "alerts.view_alertdelivery",
        "metering.view_usageevent",
        "axes.view_accessattempt",
        "axes.delete_accessattempt",
        "billing.add_ledgerentry",
        "django_celery_beat.change_periodictask",
        "auth.view_user",
        "relay.view_upstream",
        "relay.change_upstream",
    ):
        assert wanted in perms, wanted
    changes = {p for p in perms if p.split(".")[1].startswith(("add_", "change_", "delete_"))}
    assert changes == {
        "axes.delete_accessattempt",
        "billing.add_ledgerentry",
        "django_celery_beat.change_periodictask",
        "relay.add_upstream",
        "relay.change_upstream",
    }
