"""Rate limits per key and per tenant at authorize, on both balance backends.

Requests and tokens per minute are leaky buckets, parallel requests are open holds; all are
decided with the balance in one admission (docs/security.md). Concurrency tests use real
threads against the real views on PostgreSQL and Redis: N concurrent requests against a limit
of M admit exactly M.
"""

import threading
from collections import Counter

import pytest
from django.db import connection
from rest_framework.test import APIClient

from billing.models import Hold
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _authorize(secret: str, *, tokens: int = 100, hold: bool = False, request_id: str | None = None, **extra):
    client = APIClient(**extra)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    body: dict = {"model": "gpt-4o", "estimated_input_tokens": tokens, "max_output_tokens": 0}
    if hold:
        body.update(hold=True, request_id=request_id)
    return client.post("/api/v1/authorize", body, format="json")


def _concurrently(count: int, call) -> list:
    results: list = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = call(index)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def funded(tenant_a):
    factories.topup(tenant_a, "100.00")
    return tenant_a


def _key(tenant, **limits):
    key, secret = factories.issue_api_key(tenant, scopes=["ingest", "read"])
    for name, value in limits.items():
        setattr(key, name, value)
    key.save()
    return key, secret


def test_concurrent_requests_against_a_key_rpm_admit_exactly_the_limit(backend, funded):
    _, secret = _key(funded, rpm_limit=5)
    answers = _concurrently(20, lambda i: _authorize(secret))
    codes = Counter(answer.status_code for answer in answers)
    assert codes == {200: 5, 429: 15}
    refused = next(answer for answer in answers if answer.status_code == 429)
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["details"]["limit"] == "requests" and error["details"]["scope"] == "api_key"
    assert int(refused["Retry-After"]) >= 1
    assert refused["x-ratelimit-limit-requests"] == "5"
    assert refused["x-ratelimit-remaining-requests"] == "0"
    assert refused["x-ratelimit-reset-requests"].endswith("s")


def test_admitted_requests_carry_openai_rate_limit_headers(backend, funded):
    _, secret = _key(funded, rpm_limit=10, tpm_limit=1000)
    first = _authorize(secret, tokens=300)
    assert first.status_code == 200
    assert first["x-ratelimit-limit-requests"] == "10"
    assert first["x-ratelimit-remaining-requests"] == "9"
    assert first["x-ratelimit-limit-tokens"] == "1000"
    assert first["x-ratelimit-remaining-tokens"] == "700"
    # 300 tokens of a 1000-per-minute bucket drain in 18 s.
    assert first["x-ratelimit-reset-tokens"] in ("18s", "17s")
    second = _authorize(secret, tokens=300)
    # 700 - 300, plus what drained in between: a token every 60 ms.
    assert 400 <= int(second["x-ratelimit-remaining-tokens"]) <= 450


def test_tokens_per_minute_refuse_the_request_that_does_not_fit(backend, funded):
    _, secret = _key(funded, tpm_limit=1000)
    assert [_authorize(secret, tokens=300).status_code for _ in range(3)] == [200, 200, 200]
    refused = _authorize(secret, tokens=300)
    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["limit"] == "tokens"
    assert int(refused["Retry-After"]) >= 1
    assert _authorize(secret, tokens=50).status_code == 200  # a smaller one still fits


def test_a_request_larger_than_the_whole_bucket_waits_a_minute(backend, funded):
    _, secret = _key(funded, tpm_limit=1000)
    refused = _authorize(secret, tokens=5000)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "60"


def test_tenant_limits_count_every_key_of_the_tenant(backend, funded):
    funded.rpm_limit = 4
    funded.save()
    _, first = _key(funded)
    _, second = _key(funded)
    codes = [_authorize(secret).status_code for secret in (first, second, first, second, first, second)]
    assert codes == [200, 200, 200, 200, 429, 429]
    refused = _authorize(first)
    assert refused.json()["error"]["details"]["scope"] == "tenant"


def test_one_tenant_limits_never_touch_another(backend, funded, tenant_b):
    factories.topup(tenant_b, "100.00")
    _, limited = _key(funded, rpm_limit=1)
    _, other = _key(tenant_b, rpm_limit=1)
    assert _authorize(limited).status_code == 200
    assert _authorize(limited).status_code == 429
    assert _authorize(other).status_code == 200


def test_parallel_holds_against_a_limit_admit_exactly_the_limit(backend, funded):
    key, secret = _key(funded, max_parallel_requests=3)
    answers = _concurrently(12, lambda i: _authorize(secret, hold=True, request_id=f"par-{i}"))
    codes = Counter(answer.status_code for answer in answers)
    assert codes == {200: 3, 429: 9}
    assert Hold.objects.filter(api_key=key, status=Hold.Status.OPEN).count() == 3
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json()["error"]["details"]["limit"] == "parallel"
    # A check (no hold) is refused while the slots are full, and takes none.
    assert _authorize(secret).status_code == 429


def test_settling_a_hold_frees_its_parallel_slot(backend, funded):
    _, secret = _key(funded, max_parallel_requests=1)
    assert _authorize(secret, hold=True, request_id="one").status_code == 200
    assert _authorize(secret, hold=True, request_id="two").status_code == 429
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    event = {"request_id": "one", "model": "gpt-4o", "input_tokens": 80, "output_tokens": 0}
    assert client.post("/api/v1/events", event, format="json").status_code == 201
    assert _authorize(secret, hold=True, request_id="two").status_code == 200


def test_settlement_gives_back_what_the_estimate_took_beyond_the_usage(backend, funded):
    _, secret = _key(funded, tpm_limit=1000)
    assert _authorize(secret, tokens=900, hold=True, request_id="big").status_code == 200
    assert _authorize(secret, tokens=800).status_code == 429
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    event = {"request_id": "big", "model": "gpt-4o", "input_tokens": 100, "output_tokens": 0}
    assert client.post("/api/v1/events", event, format="json").status_code == 201
    # The bucket now holds ~100 tokens, not 900: 800 more fit.
    assert _authorize(secret, tokens=800).status_code == 200


def test_a_replayed_hold_costs_no_request(backend, funded):
    _, secret = _key(funded, rpm_limit=2)
    assert _authorize(secret, hold=True, request_id="same").status_code == 200
    assert _authorize(secret, hold=True, request_id="same").status_code == 200
    assert _authorize(secret).status_code == 200  # the replay left the second request free


def test_no_money_answers_402_and_consumes_no_rate(backend, tenant_a):
    _, secret = _key(tenant_a, rpm_limit=1)
    assert _authorize(secret).status_code == 402
    assert _authorize(secret).status_code == 402
    factories.topup(tenant_a, "10.00")
    assert _authorize(secret).status_code == 200


def test_usage_is_never_refused_for_a_rate_limit(backend, funded):
    _, secret = _key(funded, rpm_limit=1, tpm_limit=10, max_parallel_requests=1)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    for n in range(5):
        event = {"request_id": f"u-{n}", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 1000}
        assert client.post("/api/v1/events", event, format="json").status_code == 201
