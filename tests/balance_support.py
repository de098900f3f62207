"""Fixtures for balances, holds and quotas (tests/billing, tests/metering).

`backend` runs a test once per balance backend: "redis" (Lua on the test Redis database,
emptied with FLUSHDB first; never FLUSHALL) and "db" (the database alone).
"""

import pytest
import redis
from django.conf import settings

from metering.services.authorize import authorize_caches_clear


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(params=["redis", "db"])
def backend(request, settings, redis_client) -> str:
    settings.BALANCE_BACKEND = request.param
    settings.AUTHORIZE_CACHE_SECONDS = 0
    if request.param == "redis":
        redis_client.flushdb()  # this test database's own Redis db only
    authorize_caches_clear()
    return request.param


@pytest.fixture
def redis_backend(settings, redis_client) -> str:
    settings.BALANCE_BACKEND = "redis"
    settings.AUTHORIZE_CACHE_SECONDS = 0
    redis_client.flushdb()
    authorize_caches_clear()
    return "redis"


@pytest.fixture(autouse=True)
def _fresh_authorize_caches():
    """Authorize caches prices and quota lists per process; no test sees another's."""
    authorize_caches_clear()
