"""Operators' writes to upstreams: validated here, whatever the caller (admin, command)."""

import fnmatch
import urllib.parse
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from relay import crypto
from relay.models import Upstream
from relay.services import routing

MODEL_MAP_MAX = 200


def clean_base_url(value: str) -> str:
    """An http(s) URL with a host, no credentials, query or fragment. Loopback is allowed: only
    operators set upstreams (the tenant-facing SSRF policy of infra/notifications does not apply)."""
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError({"base_url": f"base_url must be an http:// or https:// URL with a host, not {value!r}."})
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationError({"base_url": "base_url may not carry credentials, a query or a fragment."})
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValidationError({"base_url": f"base_url has an invalid port: {value!r}."}) from None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def clean_model_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise ValidationError({"model_map": "model_map must be a non-empty object {model or glob: upstream model}."})
    if len(value) > MODEL_MAP_MAX:
        raise ValidationError({"model_map": f"model_map may have at most {MODEL_MAP_MAX} entries."})
    cleaned = {}
    for pattern, target in value.items():
        if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > 200:
            raise ValidationError({"model_map": f"model {pattern!r} must be a name or glob of 1 to 200 characters."})
        if not isinstance(target, str) or len(target) > 200 or any(c in target for c in "*?["):
            raise ValidationError({"model_map": f"the upstream model for {pattern!r} must be a plain name or empty."})
        fnmatch.translate(pattern)
        cleaned[pattern.strip()] = target.strip()
    return cleaned


def upstream_save(
    *,
    name: str,
    base_url: str | None = None,
    api_key: str | None = None,
    model_map: dict[str, str] | None = None,
    **fields: Any,
) -> Upstream:
    """Create or update the upstream `name`; the API key is stored encrypted (None keeps it)."""
    with transaction.atomic():
        upstream = Upstream.objects.select_for_update().filter(name=name).first() or Upstream(name=name)
        if base_url is not None:
            upstream.base_url = clean_base_url(base_url)
        if model_map is not None:
            upstream.model_map = clean_model_map(model_map)
        if api_key is not None:
            upstream.api_key_encrypted = crypto.encrypt(api_key)
        for field, value in fields.items():
            setattr(upstream, field, value)
        if not upstream.base_url:
            raise ValidationError({"base_url": "A new upstream needs base_url."})
        if not upstream.model_map:
            raise ValidationError({"model_map": "A new upstream needs model_map."})
        upstream.full_clean(exclude=["api_key_encrypted", "base_url"])
        upstream.save()
    routing.routes_clear()
    return upstream


def upstreams_reencrypt() -> int:
    """Re-encrypt every stored upstream key under the first RELAY_ENCRYPTION_KEYS key."""
    changed = 0
    with transaction.atomic():
        for upstream in Upstream.objects.select_for_update().exclude(api_key_encrypted=""):
            upstream.api_key_encrypted = crypto.reencrypt(upstream.api_key_encrypted)
            upstream.save(update_fields=["api_key_encrypted", "updated_at"])
            changed += 1
    routing.routes_clear()
    return changed
