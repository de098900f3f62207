"""Per-key controls (expiry, allowed models, allowed networks) and the ingest abuse ceiling."""

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from metering.models import UsageEvent
from tests import factories

pytestmark = pytest.mark.django_db


def _client(secret: str, **extra) -> APIClient:
    client = APIClient(**extra)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _authorize(client: APIClient, model: str = "gpt-4o"):
    body = {"model": model, "estimated_input_tokens": 10, "max_output_tokens": 10}
    return client.post("/api/v1/authorize", body, format="json")


def _event(client: APIClient, request_id: str, model: str = "gpt-4o"):
    body = {"request_id": request_id, "model": model, "input_tokens": 10, "output_tokens": 5}
    return client.post("/api/v1/events", body, format="json")


@pytest.fixture
def funded(tenant_a):
    factories.topup(tenant_a, "10.00")
    return tenant_a


def test_an_expired_key_is_refused_everywhere(funded):
    key, secret = factories.issue_api_key(funded)
    client = _client(secret)
    assert _authorize(client).status_code == 200
    key.expires_at = timezone.now() - dt.timedelta(seconds=1)
    key.save()
    for answer in (_authorize(client), _event(client, "late"), client.get("/api/v1/balance")):
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "key_expired"


def test_a_key_that_expires_later_still_works(funded):
    key, secret = factories.issue_api_key(funded)
    key.expires_at = timezone.now() + dt.timedelta(days=1)
    key.save()
    assert _authorize(_client(secret)).status_code == 200


def test_a_service_token_cannot_act_for_an_expired_key(funded, service):
    key, _ = factories.issue_api_key(funded)
    key.expires_at = timezone.now() - dt.timedelta(minutes=1)
    key.save()
    body = {"model": "gpt-4o", "estimated_input_tokens": 1, "max_output_tokens": 1, "api_key": key.pk}
    answer = service.post("/api/v1/authorize", body)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "key_expired"


def test_authorize_refuses_a_model_outside_the_allowed_list(funded):
    key, secret = factories.issue_api_key(funded)
    key.allowed_models = ["gpt-4o-mini*", "o3"]
    key.save()
    client = _client(secret)
    refused = _authorize(client, "gpt-4o")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert _authorize(client, "gpt-4o-mini-2024-07-18").status_code == 200  # the glob


def test_usage_of_a_model_outside_the_list_is_stored_and_flagged(funded):
    key, secret = factories.issue_api_key(funded)
    key.allowed_models = ["gpt-4o-mini*"]
    key.save()
    client = _client(secret)
    stored = _event(client, "outside", "gpt-4o")
    assert stored.status_code == 201
    assert stored.json()["flags"] == ["model_not_allowed"]
    assert stored.json()["cost"] is not None  # it happened: it is billed
    allowed = _event(client, "inside", "gpt-4o-mini")
    assert allowed.json()["flags"] == []
    assert UsageEvent.objects.get(request_id="outside").flags == "model_not_allowed"
    assert UsageEvent.objects.get(request_id="inside").flags == ""
    assert client.get(f"/api/v1/events/{stored.json()['id']}").json()["flags"] == ["model_not_allowed"]


def test_a_key_is_refused_outside_its_networks(funded):
    key, secret = factories.issue_api_key(funded)
    key.allowed_networks = ["10.0.0.0/8", "2001:db8::/32"]
    key.save()
    outside = _authorize(_client(secret, REMOTE_ADDR="192.0.2.7"))
    assert outside.status_code == 403
    assert outside.json()["error"]["code"] == "network_not_allowed"
    assert _authorize(_client(secret, REMOTE_ADDR="10.1.2.3")).status_code == 200
    assert _authorize(_client(secret, REMOTE_ADDR="2001:db8::1")).status_code == 200


def test_a_forged_forwarded_for_header_does_not_open_a_network(funded, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    key, secret = factories.issue_api_key(funded)
    key.allowed_networks = ["10.0.0.0/8"]
    key.save()
    client = _client(secret, REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="10.0.0.1")
    assert _authorize(client).status_code == 403


def test_the_ingest_ceiling_answers_429_and_a_retry_stores_once(funded, settings, redis_client):
    redis_client.flushdb()
    settings.INGEST_CEILING_PER_MINUTE = 3
    _, secret = factories.issue_api_key(funded)
    client = _client(secret)
    answers = [_event(client, f"c-{n}").status_code for n in range(3)]
    assert answers == [201, 201, 201]
    refused = _event(client, "c-3")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_requests"
    assert int(refused["Retry-After"]) >= 1
    _, other_secret = factories.issue_api_key(funded)
    assert _event(_client(other_secret), "d-0").status_code == 201  # per credential
    settings.INGEST_CEILING_PER_MINUTE = 0  # the window turns (here: the ceiling is lifted)
    assert _event(client, "c-3").status_code == 201
    assert _event(client, "c-3").status_code == 200
    assert UsageEvent.objects.filter(request_id="c-3").count() == 1


def test_the_ingest_ceiling_works_without_redis(funded, settings):
    settings.REDIS_URL = ""
    settings.BALANCE_BACKEND = "db"
    settings.INGEST_CEILING_PER_MINUTE = 2
    _, secret = factories.issue_api_key(funded)
    client = _client(secret)
    assert [_event(client, f"n-{n}").status_code for n in range(3)] == [201, 201, 429]


def test_balance_shows_the_configured_rate_limits(funded):
    funded.rpm_limit = 1000
    funded.save()
    key, secret = factories.issue_api_key(funded, scopes=["read"])
    key.tpm_limit, key.max_parallel_requests = 50_000, 4
    key.save()
    limits = _client(secret).get("/api/v1/balance").json()["rate_limits"]
    assert limits["api_key"] == {"requests_per_minute": None, "tokens_per_minute": 50_000, "max_parallel_requests": 4}
    assert limits["tenant"]["requests_per_minute"] == 1000
