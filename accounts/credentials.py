"""API key and service token format, hashing and verification.

A credential is `<kind>_<prefix>_<secret>`: the prefix (public, unique) finds the row, and
one HMAC-SHA256 with a server pepper over the whole string is compared in constant time.
The secret has 256 bits of entropy, so a slow password hasher would add latency and no safety.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.conf import settings

API_KEY_KIND = "tbk"
SERVICE_TOKEN_KIND = "tbs"  # noqa: S105 - a prefix, not a secret
_PREFIX_ALPHABET = "abcdefghijkmnopqrstuvwxyz23456789"  # no look-alikes (l, 0, 1)
_PREFIX_LENGTH = 12


@dataclass(frozen=True)
class IssuedSecret:
    prefix: str
    secret: str  # the whole credential, shown once
    secret_hash: str


@dataclass(frozen=True)
class ParsedCredential:
    kind: str
    prefix: str
    raw: str


def hash_credential(raw: str) -> str:
    return hmac.new(settings.API_KEY_PEPPER.encode(), raw.encode(), hashlib.sha256).hexdigest()


def issue(kind: str) -> IssuedSecret:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LENGTH))
    raw = f"{kind}_{prefix}_{secrets.token_urlsafe(32)}"
    return IssuedSecret(prefix=prefix, secret=raw, secret_hash=hash_credential(raw))


def parse(raw: str) -> ParsedCredential | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] not in (API_KEY_KIND, SERVICE_TOKEN_KIND):
        return None
    if len(parts[1]) != _PREFIX_LENGTH or not parts[2] or len(raw) > 200:
        return None
    return ParsedCredential(kind=parts[0], prefix=parts[1], raw=raw)


def matches(raw: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_credential(raw), stored_hash)
