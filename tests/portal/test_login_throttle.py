"""Login throttling (django-axes) on /login/ and /admin/login/, and the password reset limits.

Every test goes through HTTP with Django's test client; the client address is REMOTE_ADDR,
set per request where a test needs several addresses.
"""

import datetime as dt

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.conf import settings
from django.db.models import F
from django.urls import reverse

from accounts.models import AuditLog
from tests.portal.web_support import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN_PAGES = {"portal": "/login/", "admin": "/admin/login/"}


def attempt(client, path: str, username: str, password: str, address: str = "127.0.0.1", **extra):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address, **extra)


def assert_logged_in(response) -> None:
    assert response.status_code == 302, (response.status_code, response.content[:300])


def assert_refused(response) -> None:
    assert response.status_code == 429, (response.status_code, response.content[:300])
    assert response["Retry-After"] == str(settings.LOGIN_COOLOFF_MINUTES * 60)
    page = response.content.decode()
    assert "Too many failed logins" in page
    assert f"Wait {settings.LOGIN_COOLOFF_MINUTES} minutes, then try again." in page


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_thirty_wrong_passwords_then_the_right_one_is_refused(client, operator, page):
    path = LOGIN_PAGES[page]
    statuses = [attempt(client, path, "ops@platform.test", f"wrong guess {n}").status_code for n in range(30)]
    # The form answers normally until the limit, then every attempt is a 429.
    limit = settings.LOGIN_FAILURE_LIMIT
    assert statuses[: limit - 1] == [200] * (limit - 1)
    assert statuses[limit - 1 :] == [429] * (30 - limit + 1)
    assert_refused(attempt(client, path, "ops@platform.test", PASSWORD))
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_fewer_failures_than_the_limit_still_log_in(client, operator, page):
    path = LOGIN_PAGES[page]
    for n in range(settings.LOGIN_FAILURE_LIMIT - 1):
        assert attempt(client, path, "ops@platform.test", f"typo {n}").status_code == 200
    assert_logged_in(attempt(client, path, "ops@platform.test", PASSWORD))


def test_portal_and_admin_failures_count_together(client, operator):
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        path = LOGIN_PAGES["portal"] if n % 2 else LOGIN_PAGES["admin"]
        attempt(client, path, "ops@platform.test", f"wrong {n}", address=f"198.51.100.{n + 1}")
    assert_refused(attempt(client, LOGIN_PAGES["admin"], "ops@platform.test", PASSWORD, address="203.0.113.9"))


def test_an_account_is_locked_whichever_address_tries(client, owner_a, viewer_a):
    # One failure from each of many addresses: no address reaches the limit, the account does.
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        attempt(client, "/login/", "owner@acme.test", f"wrong {n}", address=f"198.51.100.{n + 1}")
    assert_refused(attempt(client, "/login/", "owner@acme.test", PASSWORD, address="203.0.113.7"))
    # Another account, from a fresh address, is not affected.
    assert_logged_in(attempt(client, "/login/", "viewer@acme.test", PASSWORD, address="203.0.113.8"))


def test_an_address_is_locked_whichever_account_it_tries(client, owner_a, viewer_a):
    # Password spraying: one guess per account name, all from one address.
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        attempt(client, "/login/", f"user{n}@acme.test", "Winter2026!", address="198.51.100.50")
    assert_refused(attempt(client, "/login/", "owner@acme.test", PASSWORD, address="198.51.100.50"))
    # The account itself is fine from another address.
    assert_logged_in(attempt(client, "/login/", "owner@acme.test", PASSWORD, address="198.51.100.51"))


def test_logging_into_another_account_does_not_clear_the_failures(client, owner_a, viewer_a):
    """An attacker who owns an account cannot reset the count between guesses by logging into it."""
    address = "198.51.100.40"
    for round_ in range(2):
        for n in range(settings.LOGIN_FAILURE_LIMIT // 2):
            attempt(client, "/login/", "owner@acme.test", f"guess {round_}-{n}", address=address)
        assert_logged_in(attempt(client, "/login/", "viewer@acme.test", PASSWORD, address=address))
        client.post(reverse("logout"))
    for n in range(settings.LOGIN_FAILURE_LIMIT - 2 * (settings.LOGIN_FAILURE_LIMIT // 2)):
        attempt(client, "/login/", "owner@acme.test", f"last guess {n}", address=address)
    assert_refused(attempt(client, "/login/", "owner@acme.test", PASSWORD, address="203.0.113.40"))


def test_a_forged_x_forwarded_for_does_not_dodge_the_address_limit(client, owner_a):
    """Without a declared proxy the header is the client's own text: REMOTE_ADDR counts."""
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        attempt(
            client,
            "/login/",
            f"user{n}@acme.test",
            "guess",
            address="198.51.100.60",
            HTTP_X_FORWARDED_FOR=f"10.9.9.{n}",
        )
    assert_refused(
        attempt(
            client, "/login/", "owner@acme.test", PASSWORD, address="198.51.100.60", HTTP_X_FORWARDED_FOR="10.9.9.99"
        )
    )


def test_behind_a_declared_proxy_the_forwarded_client_counts(client, owner_a, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.2"
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        attempt(client, "/login/", f"user{n}@acme.test", "guess", address=proxy, HTTP_X_FORWARDED_FOR="198.51.100.70")
    # Another client behind the same proxy is not locked out with the first one.
    assert_logged_in(
        attempt(client, "/login/", "owner@acme.test", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="198.51.100.71")
    )
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.70"}


def test_the_cool_off_ends(client, owner_a):
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        attempt(client, "/login/", "owner@acme.test", f"wrong {n}")
    assert_refused(attempt(client, "/login/", "owner@acme.test", PASSWORD))
    # Almost the whole cool-off later: still refused (and the refusal starts it again).
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - dt.timedelta(minutes=settings.LOGIN_COOLOFF_MINUTES - 1)
    )
    assert_refused(attempt(client, "/login/", "owner@acme.test", PASSWORD))
    # The whole cool-off after the last failure: the right password works again.
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - dt.timedelta(minutes=settings.LOGIN_COOLOFF_MINUTES))
    assert_logged_in(attempt(client, "/login/", "owner@acme.test", PASSWORD))


def test_a_lockout_is_audited_once_and_every_failure_kept(client, owner_a):
    for n in range(12):
        attempt(client, "/login/", "owner@acme.test", f"wrong {n}", address="198.51.100.80")
    entries = list(AuditLog.objects.filter(action="login.lockout"))
    assert len(entries) == 1
    assert entries[0].actor_label == "address:198.51.100.80"
    assert entries[0].target_type == "User" and entries[0].target_id == str(owner_a.pk)
    assert entries[0].changes == {
        "username": "owner@acme.test",
        "ip_address": "198.51.100.80",
        "path": "/login/",
        "failures": settings.LOGIN_FAILURE_LIMIT,
    }
    assert AccessFailureLog.objects.filter(username="owner@acme.test").count() == 12


def test_operators_see_the_lockout_on_the_audit_page(client, owner_a, operator):
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        attempt(client, "/login/", "owner@acme.test", f"wrong {n}", address="198.51.100.81")
    client.force_login(operator)
    page = client.get(reverse("ops-audit"), {"action": "login."}).content.decode()
    assert "login.lockout" in page
    assert "address:198.51.100.81" in page


def test_the_lockout_page_is_translated(client, owner_a):
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        response = attempt(client, "/login/", "owner@acme.test", f"wrong {n}")
    assert response.status_code == 429
    page = response.content.decode()
    assert "尝试次数过多" in page
    assert f"请等待 {settings.LOGIN_COOLOFF_MINUTES} 分钟后再试。" in page


# --- Password reset --------------------------------------------------------------------------


def reset(client, email: str, address: str = "127.0.0.1"):
    return client.post(reverse("password_reset"), {"email": email}, REMOTE_ADDR=address)


def test_a_reset_flood_for_one_email_is_throttled(client, owner_a, mailoutbox):
    limit = settings.PASSWORD_RESET_LIMIT_PER_EMAIL
    # From many addresses: the email's own limit applies.
    answers = [reset(client, "owner@acme.test", address=f"198.51.100.{n + 1}").status_code for n in range(limit + 5)]
    assert answers == [302] * limit + [429] * 5
    assert len(mailoutbox) == limit
    refused = reset(client, "Owner@Acme.test ", address="203.0.113.1")  # the same address, written otherwise
    assert refused.status_code == 429
    assert refused["Retry-After"] == str(settings.PASSWORD_RESET_WINDOW_MINUTES * 60)
    assert "Too many password reset requests" in refused.content.decode()


def test_a_reset_flood_from_one_address_is_throttled(client, owner_a, mailoutbox):
    limit = settings.PASSWORD_RESET_LIMIT_PER_ADDRESS
    answers = [reset(client, f"someone{n}@example.test", address="198.51.100.90").status_code for n in range(limit + 3)]
    assert answers == [302] * limit + [429] * 3
    # Even for a real account: the address is over its limit.
    assert reset(client, "owner@acme.test", address="198.51.100.90").status_code == 429
    assert mailoutbox == []
    # Another address may still ask.
    assert reset(client, "owner@acme.test", address="198.51.100.91").status_code == 302
    assert len(mailoutbox) == 1
