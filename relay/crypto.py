"""Upstream API keys encrypted at rest: Fernet with rotation (MultiFernet).

RELAY_ENCRYPTION_KEYS lists Fernet keys, newest first: the first encrypts, every one decrypts.
To rotate: put a new key first, run `manage.py relay_reencrypt`, then drop the old key.
"""

import base64
import functools
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretUnreadable(Exception):
    """A stored secret that none of RELAY_ENCRYPTION_KEYS decrypts."""


@functools.cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        # Development only (settings refuse production without keys): a key derived from SECRET_KEY.
        derived = base64.urlsafe_b64encode(hashlib.sha256(f"relay:{settings.SECRET_KEY}".encode()).digest())
        return MultiFernet([Fernet(derived)])
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "RELAY_ENCRYPTION_KEYS must be Fernet keys (32 url-safe base64 bytes), comma-separated"
        ) from exc


def _current() -> MultiFernet:
    return _fernet(tuple(settings.RELAY_ENCRYPTION_KEYS))


def encrypt(plain: str) -> str:
    return _current().encrypt(plain.encode()).decode() if plain else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("no key of RELAY_ENCRYPTION_KEYS decrypts this secret") from exc


def reencrypt(token: str) -> str:
    """The same secret under the first key (MultiFernet.rotate)."""
    if not token:
        return ""
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("no key of RELAY_ENCRYPTION_KEYS decrypts this secret") from exc
