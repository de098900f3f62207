"""What the portal shows to whom in production: /metrics, /readyz, error bodies, HSTS, proxies,
and `check --deploy`.

The test run's own settings are production's (DEBUG=0, no METRICS_TOKEN, no proxy declared),
so the defaults are what these tests see unless a test overrides one. Settings computed at import
(the proxy header, HSTS defaults) are also read in a fresh interpreter with a chosen environment.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from tests.assertions import METRICS_TOKEN

ROOT = Path(__file__).resolve().parents[2]
CLOSED_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1
# What a connection error names and no answer may show.
LEAKS = ("127.0.0.1", "localhost", "6379", ":1", "5432", "Error 111", "refused", "tokenbill", "postgres")


def assert_no_leak(body: str) -> None:
    for text in LEAKS:
        assert text not in body, f"{text!r} in {body!r}"


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


# --- /metrics ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_are_closed_by_default_in_production(client):
    assert settings.METRICS_TOKEN == "" and settings.METRICS_ALLOWED_NETWORKS == []
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", **bearer("anything")).status_code == 403


@pytest.mark.django_db
@override_settings(METRICS_TOKEN=METRICS_TOKEN)
def test_metrics_need_the_token(client):
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", **bearer(METRICS_TOKEN[:-1] + "X")).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {METRICS_TOKEN}").status_code == 403
    response = client.get("/metrics", **bearer(METRICS_TOKEN))
    assert response.status_code == 200
    assert b"django_http_requests_total_by_method_total" in response.content


@pytest.mark.django_db
@override_settings(METRICS_ALLOWED_NETWORKS=["10.20.0.0/16", "fd00::/8"])
def test_metrics_answer_allow_listed_addresses(client):
    assert client.get("/metrics", REMOTE_ADDR="10.20.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="fd00::5").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.20.3.4").status_code == 200  # a dual-stack socket
    assert client.get("/metrics", REMOTE_ADDR="10.21.0.1").status_code == 403
    # Without a declared proxy, X-Forwarded-For is the caller's own claim.
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="10.20.3.4").status_code == 403


@pytest.mark.django_db
@override_settings(METRICS_ALLOWED_NETWORKS=["10.20.0.0/16"], TRUSTED_PROXY_COUNT=1)
def test_behind_a_declared_proxy_the_forwarded_address_is_checked(client):
    proxy = "10.99.0.1"
    assert client.get("/metrics", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="10.20.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="10.20.3.4, 203.0.113.5").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 403


@pytest.mark.django_db
@override_settings(DEBUG=True)
def test_metrics_are_open_in_the_embedded_default(client):
    assert client.get("/metrics").status_code == 200


# --- /readyz -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz_tells_anonymous_callers_only_the_status(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_with_redis_unreachable_names_no_host(client, settings, caplog):
    settings.REDIS_URL = CLOSED_REDIS
    settings.METRICS_TOKEN = METRICS_TOKEN
    anonymous = client.get("/readyz")
    assert anonymous.status_code == 503
    assert anonymous.json() == {"status": "unavailable"}
    observer = client.get("/readyz", **bearer(METRICS_TOKEN))
    assert observer.status_code == 503
    assert observer.json() == {"status": "unavailable", "checks": {"database": "ok", "redis": "error: ConnectionError"}}
    for response in (anonymous, observer):
        assert_no_leak(response.content.decode())
    # The detail is in the server's log.
    assert any("127.0.0.1:1" in record.getMessage() for record in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_readyz_with_the_database_unreachable_names_no_host(client, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT="1")  # nothing listens on port 1
    try:
        anonymous = client.get("/readyz")
        observer = client.get("/readyz", **bearer(METRICS_TOKEN))
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert anonymous.status_code == observer.status_code == 503
    assert anonymous.json() == {"status": "unavailable"}
    assert observer.json()["checks"]["database"] == "error: OperationalError"
    for response in (anonymous, observer):
        assert_no_leak(response.content.decode())


# --- API error bodies --------------------------------------------------------------------------


@pytest.mark.django_db
def test_api_503_when_redis_is_down_names_no_host(key_a, tenant_a, settings, caplog):
    settings.BALANCE_BACKEND = "redis"
    settings.REDIS_URL = CLOSED_REDIS
    settings.BALANCE_REDIS_TIMEOUT = 0.2
    settings.AUTHORIZE_CACHE_SECONDS = 0
    response = key_a.post("/api/v1/authorize", {"model": "gpt-4o", "estimated_input_tokens": 1, "max_output_tokens": 1})
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "balance_unavailable",
        "message": "The balance store is unavailable; try again.",
        "details": None,
    }
    assert_no_leak(response.content.decode())
    assert any("127.0.0.1:1" in record.getMessage() for record in caplog.records)


# --- HSTS and the forwarded protocol -----------------------------------------------------------


@pytest.mark.django_db
def test_hsts_is_sent_over_https(client):
    response = client.get("/healthz", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "Strict-Transport-Security" not in client.get("/healthz")  # only ever over HTTPS


@pytest.mark.django_db
def test_x_forwarded_proto_is_ignored_without_a_declared_proxy(client):
    assert settings.TRUSTED_PROXY_COUNT == 0
    response = client.get("/healthz", HTTP_X_FORWARDED_PROTO="https")
    assert "Strict-Transport-Security" not in response  # the request was not taken for HTTPS


def settings_under(**environment: str) -> dict:
    """Selected settings as portal/settings.py computes them under this environment alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "TRUSTED_", "METRICS_"))}
    env |= {"DATABASE_URL": "sqlite://:memory:", "REDIS_URL": "", "LOG_LEVEL": "WARNING", **environment}
    names = [
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SECURE_PROXY_SSL_HEADER",
        "SILENCED_SYSTEM_CHECKS",
    ]
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_production_defaults_turn_hsts_on_and_trust_no_proxy():
    values = settings_under(DEBUG="0", SECRET_KEY="k" * 50)
    assert values["SECURE_HSTS_SECONDS"] == 31_536_000
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SECURE_HSTS_PRELOAD"] is False
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    assert "security.W021" in values["SILENCED_SYSTEM_CHECKS"]  # preload off: on purpose, documented


def test_a_declared_proxy_is_trusted_for_the_protocol():
    values = settings_under(DEBUG="0", SECRET_KEY="k" * 50, TRUSTED_PROXY_COUNT="1", SECURE_HSTS_PRELOAD="1")
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert "security.W021" not in values["SILENCED_SYSTEM_CHECKS"]


@pytest.mark.django_db
@override_settings(TRUSTED_PROXY_COUNT=1, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_behind_a_declared_proxy_x_forwarded_proto_counts(client):
    response = client.get("/healthz", HTTP_X_FORWARDED_PROTO="https")
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


# --- check --deploy ----------------------------------------------------------------------------


@override_settings(
    SECRET_KEY="x9Fq2LmZ7pR4vT8wKc3NdH6jYb1sGe5uAo0iXrQnVtPyWzMhJk-prod", ALLOWED_HOSTS=["billing.example.com"]
)
def test_check_deploy_is_clean_with_production_settings(monkeypatch):
    # The browser tests' playwright fixture sets this for the session; production never does.
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)
    assert settings.DEBUG is False
    call_command("check", deploy=True, fail_level="WARNING")  # raises SystemCheckError on any warning
