"""Fixtures for balances, holds and quotas (tests/billing, tests/metering).

`backend` runs a test once per balance backend: "redis" (Lua on the test Redis database,
emptied with FLUSHDB first; never FLUSHALL), "redis-cluster" (the same scripts on a real
three-master Redis Cluster, tests/redis_cluster.py, emptied the same way on every master) and
"db" (the database alone). Both Redis flavours give the test the value "redis": the tests
are the same, only the server differs. `redis_backend` runs a test on the two Redis flavours.
"""

import pytest
from django.conf import settings

from infra.redis_client import RedisClient, connect
from metering.services.authorize import authorize_caches_clear

REDIS_FLAVOURS = ["redis", "redis-cluster"]


class CurrentRedis:
    """A client of the Redis the settings name now (REDIS_URL, REDIS_CLUSTER), whichever
    fixture switched them and in whatever order the fixtures were made."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, bool], RedisClient] = {}

    def __getattr__(self, name: str):
        where = (settings.REDIS_URL, settings.REDIS_CLUSTER)
        client = self._clients.get(where)
        if client is None:
            client = self._clients[where] = connect(where[0], cluster=where[1], decode_responses=True)
        return getattr(client, name)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


@pytest.fixture
def redis_client():
    client = CurrentRedis()
    yield client
    client.close()


def use_redis(request: pytest.FixtureRequest, settings, flavour: str) -> None:
    """Point the portal's Redis (balances, ceiling, send limits) at the flavour's server."""
    if flavour == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        settings.REDIS_URL = cluster.url
        settings.REDIS_CLUSTER = True


@pytest.fixture(params=[*REDIS_FLAVOURS, "db"])
def backend(request, settings, redis_client) -> str:
    use_redis(request, settings, request.param)
    settings.BALANCE_BACKEND = "db" if request.param == "db" else "redis"
    settings.AUTHORIZE_CACHE_SECONDS = 0
    if request.param != "db":
        redis_client.flushdb()  # this test database's own Redis db only (every master of the cluster)
    authorize_caches_clear()
    return settings.BALANCE_BACKEND


@pytest.fixture(params=REDIS_FLAVOURS)
def redis_backend(request, settings, redis_client) -> str:
    use_redis(request, settings, request.param)
    settings.BALANCE_BACKEND = "redis"
    settings.AUTHORIZE_CACHE_SECONDS = 0
    redis_client.flushdb()
    authorize_caches_clear()
    return "redis"


@pytest.fixture(autouse=True)
def _fresh_authorize_caches():
    """Authorize caches prices and quota lists per process; no test sees another's."""
    authorize_caches_clear()
