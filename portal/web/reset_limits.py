"""How often the password reset form may be used: per email address and per client address.

Fixed windows of PASSWORD_RESET_WINDOW_MINUTES counted in Django's cache (Redis in production,
so every web node shares the counts; process memory in the embedded default). Every request is
counted, whether or not an account uses the email, so the answer says nothing about accounts.
Keys are a hash of the normalised email and the address, with the window's number: bounded in
size, and gone when the window ends.
"""

import hashlib
import time

from django.conf import settings
from django.core.cache import cache

KEY_PREFIX = "pwreset"


def _count(kind: str, value: str, window: int) -> int:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    key = f"{KEY_PREFIX}:{kind}:{digest}:{int(time.time()) // window}"
    cache.add(key, 0, timeout=window)
    try:
        return cache.incr(key)
    except ValueError:  # the key expired between add and incr: this is the window's first
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
