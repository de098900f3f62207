"""Who may see which portal page: one decorator, one table of roles.

Every portal view is wrapped in `portal_view(permission)`. It logs the user in, resolves the
tenant named by the URL's `slug` (a tenant the user is not a member of answers 404, exactly
like one that does not exist), checks the permission against the user's role, remembers the
tenant in the session and hands the view a `PortalContext`. Views never repeat these checks.

Staff users are operators: they may open the operations pages and read (never change) any
tenant's pages; a staff user who is also a member keeps the rights of that membership.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse

from accounts import roles
from accounts import selectors as account_selectors
from accounts.models import Membership, Tenant

SESSION_TENANT = "portal_tenant"

# The role table lives in accounts.roles, so that the downloads these pages link
# (invoicing.views) apply the very same rules; re-exported here for the views.
OWNER, ADMIN, FINANCE, VIEWER, OPERATOR = roles.OWNER, roles.ADMIN, roles.FINANCE, roles.VIEWER, roles.OPERATOR
PERMISSIONS = roles.PERMISSIONS


@dataclass
class PortalContext:
    """What a portal page knows about who is looking: the tenant, the roles, the switcher."""

    user: object
    tenant: Tenant | None
    roles: frozenset[str]
    memberships: list[Membership] = field(default_factory=list)

    def can(self, permission: str) -> bool:
        return roles.allows(self.roles, permission)

    @property
    def role(self) -> str:
        for role in (OWNER, ADMIN, FINANCE, VIEWER, OPERATOR):
            if role in self.roles:
                return role
        return ""

    @property
    def member_slugs(self) -> set[str]:
        return {m.tenant.slug for m in self.memberships}

    @property
    def is_operator(self) -> bool:
        return OPERATOR in self.roles

    # Template conveniences: {% if portal.may.keys_manage %}
    @property
    def may(self) -> dict[str, bool]:
        return {name.replace(".", "_"): self.can(name) for name in PERMISSIONS}


def _context(request: HttpRequest, slug: str | None) -> PortalContext:
    user = request.user
    memberships = account_selectors.memberships_for_user(user)
    if slug is None:
        # Pages outside a tenant (operations, home): the session's tenant feeds the navigation.
        current = request.session.get(SESSION_TENANT)
        membership = next((m for m in memberships if m.tenant.slug == current), None)
        tenant = membership.tenant if membership else None
        held = roles.roles_from(is_staff=user.is_staff, membership_role=membership.role if membership else None)
        return PortalContext(user=user, tenant=tenant, roles=held, memberships=memberships)
    membership = next((m for m in memberships if m.tenant.slug == slug), None)
    if membership is not None:
        tenant = membership.tenant
    elif user.is_staff:
        tenant = account_selectors.tenant_by_slug(slug)
    else:
        tenant = None
    if tenant is None:
        raise Http404("No such tenant.")
    held = roles.roles_from(is_staff=user.is_staff, membership_role=membership.role if membership else None)
    return PortalContext(user=user, tenant=tenant, roles=held, memberships=memberships)


def portal_context(request: HttpRequest, slug: str | None = None) -> PortalContext:
    """Resolve (and cache on the request) who is looking at which tenant; 404 for a stranger."""
    cached = getattr(request, "portal", None)
    if cached is not None and (slug is None or (cached.tenant is not None and cached.tenant.slug == slug)):
        return cached
    context = _context(request, slug)
    request.portal = context  # type: ignore[attr-defined]
    return context


def portal_view(permission: str) -> Callable:
    """Wrap a view `view(request, portal, **kwargs)`: login, tenant membership, role permission.

    URLs with a `slug` kwarg are tenant pages; the tenant becomes the session's current one.
    """
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            slug = kwargs.pop("slug", None)
            context = portal_context(request, slug)
            if not context.can(permission):
                raise PermissionDenied(f"Your role may not open this page ({permission}).")
            if slug is not None and request.session.get(SESSION_TENANT) != slug and context.roles - {OPERATOR}:
                request.session[SESSION_TENANT] = slug
            return view(request, context, *args, **kwargs)

        wrapper.portal_permission = permission  # type: ignore[attr-defined]
        return wrapper

    return decorator


def tenant_switch(request: HttpRequest, slug: str) -> Tenant:
    """Make `slug` the session's current tenant; 404 unless the user is a member."""
    membership = next((m for m in account_selectors.memberships_for_user(request.user) if m.tenant.slug == slug), None)
    if membership is None:
        raise Http404("No such tenant.")
    request.session[SESSION_TENANT] = slug
    return membership.tenant


def tenant_object(kwarg: str, loader: Callable[[Tenant, int], object | None], *, name: str) -> Callable:
    """Swap the URL's `<int:kwarg>` for the current tenant's object (argument `name`), or 404.

    Put it under `portal_view` and above method checks, so that another tenant's id answers
    404 whatever the method: the lookup always comes first, and always inside the tenant.
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, portal: PortalContext, *args, **kwargs) -> HttpResponse:
            assert portal.tenant is not None, "tenant_object needs a tenant page (a slug in the URL)"
            found = loader(portal.tenant, kwargs.pop(kwarg))
            if found is None:
                raise Http404(f"No such {name}.")
            kwargs[name] = found
            return view(request, portal, *args, **kwargs)

        return wrapper

    return decorator
