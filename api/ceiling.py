"""The abuse ceiling on ingest: at most INGEST_CEILING_PER_MINUTE requests per credential.

Usage that happened is never refused for a tenant's rate limit (docs/security.md); this is a
different guard, far above any honest client, against a credential that floods the API. A
refused request is answered 429 with Retry-After, and clients retry idempotently (request_id).

One fixed one-minute window per credential: with Redis, INCR and EXPIRE in one round trip
(the key carries the credential, so it spreads over a cluster); without Redis (the embedded
default, one process) an in-process window. If Redis fails the ceiling lets the request
through: it protects the service, and Redis failing is already answered by the balance path.
"""

import logging
import threading
import time

from django.conf import settings

from infra.cache import BoundedCache
from infra.redis_client import REDIS_FAILURES, RedisClient, connect

logger = logging.getLogger(__name__)
WINDOW_SECONDS = 60

_clients: dict[tuple[str, bool], RedisClient] = {}
_local_lock = threading.Lock()
# credential -> (window number, count); the least recently seen credentials are forgotten first,
# so a flood of new credentials cannot reset the count of a busy one.
_LOCAL_MAX = 10_000
_local: BoundedCache[tuple[int, int]] = BoundedCache(
    "ingest_ceiling_windows", max_size=_LOCAL_MAX, ttl=WINDOW_SECONDS * 2
)


def _client(url: str, cluster: bool) -> RedisClient:
    client = _clients.get((url, cluster))
    if client is None:
        client = _clients[url, cluster] = connect(url, cluster=cluster, socket_timeout=0.2, socket_connect_timeout=0.2)
    return client


def _count(credential: str, window: int) -> int:
    if settings.REDIS_URL:
        key = f"ceiling:{{{credential}}}:{window}"
        pipe = _client(settings.REDIS_URL, settings.REDIS_CLUSTER).pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS * 2)
        return int(pipe.execute()[0])
    with _local_lock:
        seen_window, count = _local.get(credential, (window, 0))
        count = count + 1 if seen_window == window else 1
        _local.set(credential, (window, count))
        return count


def ingest_ceiling_wait(credential: str) -> int:
    """0 when this request is under the ceiling, else the seconds until the window turns."""
    limit = settings.INGEST_CEILING_PER_MINUTE
    if not limit:
        return 0
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    try:
        count = _count(credential, window)
    except REDIS_FAILURES:
        logger.warning("ingest ceiling not checked: Redis failed", exc_info=True)
        return 0
    if count <= limit:
        return 0
    return max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
