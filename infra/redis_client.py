"""Every Redis client the portal opens comes from here: one server, or a Redis Cluster.

`REDIS_CLUSTER=1` says that REDIS_URL names one node of a Redis Cluster (any node: the
client reads the slot map from it and follows MOVED/ASK from then on), and every caller then
gets redis-py's `RedisCluster` instead of `Redis`. The two answer the same commands; what the
cluster adds is a rule the callers keep by construction: every command (a Lua script above
all) touches keys of one hash slot. The portal's keys carry a hash tag, the part in braces
(`bal:{42}`, `hold:{42}:<request_id>`, `rl:{42}:k7:r`, `ceiling:{<credential>}:<minute>`), so
one tenant's keys share a slot and one script never crosses slots; `same_slot` checks it.

Celery's broker is not a client of this module: a Redis Cluster cannot be a Celery broker,
so with REDIS_CLUSTER=1 CELERY_BROKER_URL names a standalone Redis or RabbitMQ
(portal/settings.py refuses to start otherwise).

This module imports no app, so every layer may use it (docs/architecture.md).
"""

from typing import Any, TypeAlias

import redis
from django.conf import settings
from redis.cluster import RedisCluster, key_slot
from redis.exceptions import RedisClusterException

RedisClient: TypeAlias = redis.Redis | RedisCluster
# What a failing store raises: a cluster client also raises RedisClusterException (not a
# RedisError) when no node answers or a slot has no master.
REDIS_FAILURES: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)


def connect(url: str, *, cluster: bool | None = None, **options: Any) -> RedisClient:
    """A new client for `url`; `cluster` defaults to settings.REDIS_CLUSTER.

    Options are redis-py's connection options (socket_timeout, decode_responses, ...); the
    cluster client passes them to the connection of each node.
    """
    if settings.REDIS_CLUSTER if cluster is None else cluster:
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def same_slot(*keys: str) -> bool:
    """True when every key maps to one Redis Cluster slot (what a script or MGET needs)."""
    return len({key_slot(key.encode()) for key in keys}) <= 1
