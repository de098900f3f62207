"""How often the password reset form may be used: per email address and per client address.

Counted in Django's cache (Redis in production, so every web node shares the counts; process
memory in the embedded default), in a window of PASSWORD_RESET_WINDOW_MINUTES that opens with
the first request (a wall-clock window would let a burst straddling its edge count twice).
Every request is counted, whether or not an account uses the email, so the answer says nothing
about accounts. Keys are a hash of the normalised email or the address: bounded in size, and
gone when their window ends.
"""

import hashlib

from django.conf import settings
from django.core.cache import cache

KEY_PREFIX = "pwreset"


def _count(kind: str, value: str, window: int) -> int:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    key = f"{KEY_PREFIX}:{kind}:{digest}"
    cache.add(key, 0, timeout=window)  # opens the window; INCR keeps its expiry
    try:
        return cache.incr(key)
    except ValueError:  # the window closed between add and incr: this opens the next one
        cache.set(key, 1, timeout=window)
        return 1


def password_reset_allowed(*, email: str, address: str) -> bool:
    """Count one reset request; False once either count is above its limit for the window."""
    window = settings.PASSWORD_RESET_WINDOW_MINUTES * 60
    by_email = _count("email", email.strip().lower()[:254], window)
    by_address = _count("address", address, window)
    return (
        by_email <= settings.PASSWORD_RESET_LIMIT_PER_EMAIL and by_address <= settings.PASSWORD_RESET_LIMIT_PER_ADDRESS
    )
