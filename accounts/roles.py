"""Which role may do what: the one table behind every portal page and every file it links.

A user's roles for a tenant are their membership's role (owner, admin, finance, viewer) plus
"operator" when they are staff. The portal's pages (portal.web.access.portal_view) and the
downloads they link (invoicing.views: invoice PDF and CSV, the finance export) ask
this module, so a download never answers someone the page it sits on would refuse.
"""

from accounts import selectors
from accounts.models import Membership, Tenant

OWNER, ADMIN, FINANCE, VIEWER = (
    Membership.Role.OWNER,
    Membership.Role.ADMIN,
    Membership.Role.FINANCE,
    Membership.Role.VIEWER,
)
OPERATOR = "operator"

# permission -> roles that have it. Operators are staff users; "ops.*" is theirs alone.
PERMISSIONS: dict[str, frozenset[str]] = {
    "usage.view": frozenset({OWNER, ADMIN, FINANCE, VIEWER, OPERATOR}),
    "billing.view": frozenset({OWNER, ADMIN, FINANCE, OPERATOR}),
    "keys.view": frozenset({OWNER, ADMIN, OPERATOR}),
    "keys.manage": frozenset({OWNER, ADMIN}),
    "alerts.view": frozenset({OWNER, ADMIN, FINANCE, OPERATOR}),
    "alerts.manage": frozenset({OWNER, ADMIN, FINANCE}),
    "ops.view": frozenset({OPERATOR}),
    "ops.manage": frozenset({OPERATOR}),
}


def roles_from(*, is_staff: bool, membership_role: str | None) -> frozenset[str]:
    """The roles of a user with this staff flag and (possibly no) membership role."""
    return frozenset(({OPERATOR} if is_staff else set()) | ({membership_role} if membership_role else set()))


def roles_for(*, user, tenant: Tenant | None) -> frozenset[str]:
    """The user's roles for `tenant` (None: outside any tenant, operator or nothing)."""
    role = selectors.membership_role(user=user, tenant=tenant) if tenant is not None else None
    return roles_from(is_staff=bool(user.is_staff), membership_role=role)


def allows(roles: frozenset[str], permission: str) -> bool:
    """Whether any of `roles` has `permission` (KeyError for an unknown permission)."""
    return bool(PERMISSIONS[permission] & roles)
