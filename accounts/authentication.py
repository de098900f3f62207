"""DRF authentication: `Authorization: Bearer <api key | service token>`.

The tenant always comes from the credential. A service token acts for a tenant only through
a tenant API key it names (resolved by the endpoint, see `Principal.acting_key`).
"""

import functools
import ipaddress
from dataclasses import dataclass

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts import credentials, selectors, services
from accounts.client_ip import client_address
from accounts.models import ApiKey, ServiceToken, Tenant


@dataclass
class Principal:
    api_key: ApiKey | None = None
    service_token: ServiceToken | None = None
    is_authenticated: bool = True

    @property
    def tenant(self) -> Tenant | None:
        return self.api_key.tenant if self.api_key is not None else None

    @property
    def is_service(self) -> bool:
        return self.service_token is not None

    @property
    def label(self) -> str:
        if self.service_token is not None:
            return f"service-token:{self.service_token.name}"
        assert self.api_key is not None
        return f"api-key:{self.api_key.prefix}"


def ensure_key_usable(api_key: ApiKey) -> None:
    """403 for a revoked or expired key or a suspended tenant (the caller is known, but may not act)."""
    if api_key.is_revoked:
        raise exceptions.PermissionDenied({"code": "key_revoked", "message": "This API key has been revoked."})
    if api_key.is_expired(timezone.now()):
        raise exceptions.PermissionDenied(
            {"code": "key_expired", "message": f"This API key expired at {api_key.expires_at:%Y-%m-%dT%H:%M:%SZ}."}
        )
    if not api_key.tenant.is_active:
        raise exceptions.PermissionDenied({"code": "tenant_suspended", "message": "This tenant is suspended."})


def ensure_network_allowed(api_key: ApiKey, request: Request) -> None:
    """403 when the key, calling for itself, comes from outside its allowed networks.

    Only the key as the caller: a service token naming a key calls from the gateway's address,
    which says nothing about where the key's owner is.
    """
    if not api_key.allowed_networks:
        return
    address = client_address(request)
    if address is None or not any(address in _network(cidr) for cidr in api_key.allowed_networks):
        raise exceptions.PermissionDenied(
            {
                "code": "network_not_allowed",
                "message": f"This API key may not be used from {address or 'this address'}.",
            }
        )


@functools.lru_cache(maxsize=4096)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


class BearerAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Principal, str] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        raw = raw.strip()
        if scheme.lower() != "bearer" or not raw:
            raise exceptions.AuthenticationFailed("Use the header 'Authorization: Bearer <key>'.")
        parsed = credentials.parse(raw)
        if parsed is None:
            raise exceptions.AuthenticationFailed("Unknown API key or service token.")
        if parsed.kind == credentials.SERVICE_TOKEN_KIND:
            token = selectors.service_token_by_secret(raw)
            if token is None:
                raise exceptions.AuthenticationFailed("Unknown API key or service token.")
            if token.is_revoked:
                raise exceptions.PermissionDenied(
                    {"code": "token_revoked", "message": "This service token has been revoked."}
                )
            services.credential_touch(credential=token)
            return Principal(service_token=token), raw
        key = selectors.api_key_by_secret(raw)
        if key is None:
            raise exceptions.AuthenticationFailed("Unknown API key or service token.")
        ensure_key_usable(key)
        ensure_network_allowed(key, request)
        services.credential_touch(credential=key)
        return Principal(api_key=key), raw

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
