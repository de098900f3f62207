"""Sliding-window send limits shared by every worker (Redis), e.g. DingTalk's 20 a minute.

Chat robots (DingTalk, WeCom, Feishu) call `defer_if_full` before each request: a message over
the robot's limit is deferred (a transient error with `attempts=0` and the wait in
`retry_after`), never sent into a throttle that would mute the robot for minutes.

With Redis (production) one Lua script per call keeps a sorted set of send times per key, so
many workers on many machines stay under the limit together; the key carries a hash tag so it
lives in one Redis Cluster slot. Without Redis (the embedded default runs one worker) an
in-process window does the same.
"""

import functools
import hashlib
import threading
import time
import uuid
from collections import deque

from django.conf import settings

from infra.cache import BoundedCache
from infra.notifications.base import TransportError
from infra.redis_client import connect

# KEYS[1] the window; ARGV: window ms, limit, a unique member. Returns 0 when a slot was taken,
# else the milliseconds until the oldest send leaves the window.
_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(tonumber(oldest[2]) + window - now_ms, 1)
"""

_local_lock = threading.Lock()
# Send times per key (a channel). Bounded all the same: past LOCAL_WINDOWS_MAX keys in one
# process, the least recently used key's window is forgotten.
LOCAL_WINDOWS_MAX = 10_000
_local_windows: BoundedCache[deque[float]] = BoundedCache("notify_rate_windows", max_size=LOCAL_WINDOWS_MAX)


@functools.cache
def _script(url: str, cluster: bool):
    return connect(url, cluster=cluster).register_script(_ACQUIRE)


def acquire(key: str, *, limit: int, window_seconds: float) -> float:
    """Take a send slot for `key`. Returns 0.0 if taken, else the seconds to wait."""
    if settings.REDIS_URL:
        waited_ms = _script(settings.REDIS_URL, settings.REDIS_CLUSTER)(
            keys=[f"notify-rate:{{{key}}}"], args=[int(window_seconds * 1000), limit, uuid.uuid4().hex]
        )
        return int(waited_ms) / 1000
    now = time.monotonic()
    with _local_lock:
        window = _local_windows.get(key)
        if window is None:
            window = deque()
            _local_windows.set(key, window)
        while window and window[0] <= now - window_seconds:
            window.popleft()
        if len(window) < limit:
            window.append(now)
            return 0.0
        return max(window[0] + window_seconds - now, 0.001)


def defer_if_full(service: str, url: str, *, limit: int, window_seconds: float) -> None:
    """Take a slot in the robot's window (the robot is its URL), or raise a deferral.

    Raises TransportError(permanent=False, attempts=0, retry_after=<seconds>) when the window
    is full: the delivery is tried again exactly when a slot frees, without counting an attempt.
    """
    robot = hashlib.sha256(url.encode()).hexdigest()[:24]  # the URL carries the robot's token
    wait = acquire(f"{service}:{robot}", limit=limit, window_seconds=window_seconds)
    if wait > 0:
        raise TransportError(
            f"robot rate limit ({limit} per {window_seconds:g}s), deferred {wait:.1f}s",
            permanent=False,
            retry_after=wait,
            attempts=0,
        )
