"""The balance backend: one interface (base.BalanceBackend), two implementations.

settings.BALANCE_BACKEND picks it: "redis" (Lua scripts on REDIS_URL, one server or a Redis
Cluster with REDIS_CLUSTER; PostgreSQL the truth) or
"db" (the database alone). It is read on every call, so tests can switch with override_settings.
"""

from typing import Any

from django.conf import settings

from billing.services.balances.base import (
    INSUFFICIENT_BALANCE,
    QUOTA_EXCEEDED,
    RATE_LIMITED,
    Admission,
    BalanceBackend,
    BalanceUnavailable,
    Decision,
    Drift,
    HoldConflict,
    HoldInfo,
    MirrorDelta,
    QuotaCheck,
)
from billing.services.balances.db_backend import DatabaseBackend
from billing.services.balances.redis_backend import RedisBackend

__all__ = [
    "INSUFFICIENT_BALANCE",
    "QUOTA_EXCEEDED",
    "RATE_LIMITED",
    "Admission",
    "BalanceBackend",
    "BalanceUnavailable",
    "Decision",
    "Drift",
    "HoldConflict",
    "HoldInfo",
    "MirrorDelta",
    "QuotaCheck",
    "balance_backend",
]

_backends: dict[tuple[object, ...], BalanceBackend] = {}


def balance_backend() -> BalanceBackend:
    if settings.BALANCE_BACKEND == "redis":
        key: tuple[Any, ...] = ("redis", settings.REDIS_URL, settings.REDIS_CLUSTER, settings.BALANCE_REDIS_TIMEOUT)
    else:
        key = ("db",)
    backend = _backends.get(key)
    if backend is None:
        if key[0] == "redis":
            backend = RedisBackend(
                url=settings.REDIS_URL, timeout=settings.BALANCE_REDIS_TIMEOUT, cluster=settings.REDIS_CLUSTER
            )
        else:
            backend = DatabaseBackend()
        _backends[key] = backend
    return backend
