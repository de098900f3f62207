"""The base for every tenant-scoped API view: scoping comes from the credential, once.

A tenant API key acts for its own tenant. A service token acts for the tenant of the key it
names (`api_key`: the full key, verified, or the api_key_id that /authorize returned), and is
bound by that key's scopes: naming a read-only key to ingest answers the same 403
`insufficient_scope` as the key itself would get. Nothing in a query string or body can
choose another tenant or widen a key's scopes.
"""

from rest_framework import status
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts import selectors
from accounts.authentication import Principal, ensure_key_usable
from accounts.models import ApiKey
from api import openapi  # noqa: F401 - registers the Bearer scheme with the schema generator
from api.errors import ApiError


def scope_required(key: ApiKey, scope: str) -> None:
    """403 `insufficient_scope` unless `key` holds `scope`; the one check for keys and named keys."""
    if not key.has_scope(scope):
        raise ApiError(
            status_code=403,
            code="insufficient_scope",
            message=f"This API key lacks the {scope!r} scope.",
            details={"required_scope": scope, "scopes": key.scopes},
        )


def resolve_named_key(ref: str | int, *, scope: str = ApiKey.Scope.INGEST.value) -> ApiKey:
    """The key a service token names, bound by its scopes: ApiError 404 when unknown, 403 when
    unusable (revoked, suspended tenant) or when it lacks `scope`.

    `scope` defaults to ingest because the one caller outside `TenantAPIView.acting_key` is
    ingest's per-event resolver (metering.api.views), where every event names its key.
    """
    key: ApiKey | None = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        key = selectors.api_key_by_id(int(ref))
    elif isinstance(ref, str):
        key = selectors.api_key_by_secret(ref)
    if key is None:
        raise ApiError(status_code=status.HTTP_404_NOT_FOUND, code="unknown_api_key", message="No such API key.")
    ensure_key_usable(key)
    scope_required(key, scope)
    return key


class TenantAPIView(APIView):
    """Subclasses set `required_scope` and use `self.acting_key(request, named)`."""

    required_scope = "read"

    def principal(self, request: Request) -> Principal:
        return request.user  # type: ignore[return-value]

    def acting_key(self, request: Request, named: str | int | None = None) -> ApiKey:
        principal = self.principal(request)
        if principal.is_service:
            if named is None or named == "":
                raise ApiError(
                    status_code=400,
                    code="api_key_required",
                    message="A service token must name the tenant key it acts for in api_key.",
                    details={"field": "api_key"},
                )
            return resolve_named_key(named, scope=self.required_scope)
        key = principal.api_key
        assert key is not None
        if named is not None and named != "":
            raise ApiError(
                status_code=400,
                code="invalid_field",
                message="api_key is only accepted from a service token; a tenant key acts for itself.",
                details={"field": "api_key"},
            )
        scope_required(key, self.required_scope)
        return key
