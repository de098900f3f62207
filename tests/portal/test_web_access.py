"""Who may open which portal page: login, tenant membership (404), roles (403), the switcher."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from accounts.services import membership_set
from portal.web.access import PERMISSIONS, SESSION_TENANT
from tests.portal.web_support import make_user

pytestmark = pytest.mark.django_db


def tenant_pages(slug: str) -> dict[str, str]:
    return {
        "dashboard": reverse("dashboard", kwargs={"slug": slug}),
        "usage": reverse("usage", kwargs={"slug": slug}),
        "usage-csv": reverse("usage-csv", kwargs={"slug": slug}),
        "keys": reverse("keys", kwargs={"slug": slug}),
        "key-create": reverse("key-create", kwargs={"slug": slug}),
        "billing": reverse("billing", kwargs={"slug": slug}),
    }


OPS_PAGES = ["ops-tenants", "ops-plans", "ops-topup", "ops-audit"]

# page -> roles that may open it (the rest get 403)
EXPECTED = {
    "dashboard": {"owner", "admin", "finance", "viewer"},
    "usage": {"owner", "admin", "finance", "viewer"},
    "usage-csv": {"owner", "admin", "finance", "viewer"},
    "keys": {"owner", "admin"},
    "key-create": {"owner", "admin"},
    "billing": {"owner", "admin", "finance"},
}


def test_pages_need_login(client, tenant_a):
    for url in [*tenant_pages(tenant_a.slug).values(), reverse("home"), reverse("ops-tenants")]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


@pytest.mark.parametrize("role_fixture", ["owner_a", "admin_a", "finance_a", "viewer_a"])
def test_roles_are_enforced_on_every_tenant_page(request, client, tenant_a, role_fixture):
    user = request.getfixturevalue(role_fixture)
    role = role_fixture.removesuffix("_a")
    client.force_login(user)
    for name, url in tenant_pages(tenant_a.slug).items():
        response = client.get(url)
        expected = 200 if role in EXPECTED[name] else 403
        assert response.status_code == expected, (role, name, response.status_code)
    for name in OPS_PAGES:
        assert client.get(reverse(name)).status_code == 403, (role, name)


def test_viewer_sees_a_friendly_403_and_no_keys_link(client, tenant_a, viewer_a):
    client.force_login(viewer_a)
    response = client.get(reverse("keys", kwargs={"slug": tenant_a.slug}))
    assert response.status_code == 403
    assert b"Not allowed" in response.content
    dashboard = client.get(reverse("dashboard", kwargs={"slug": tenant_a.slug})).content.decode()
    assert reverse("keys", kwargs={"slug": tenant_a.slug}) not in dashboard
    assert reverse("billing", kwargs={"slug": tenant_a.slug}) not in dashboard


def test_a_tenant_the_user_is_not_a_member_of_is_404(client, tenant_a, tenant_b, owner_a):
    client.force_login(owner_a)
    for url in tenant_pages(tenant_b.slug).values():
        assert client.get(url).status_code == 404, url
    for url in tenant_pages("no-such-tenant").values():
        assert client.get(url).status_code == 404, url


def test_staff_read_every_tenant_but_change_nothing(client, tenant_a, operator):
    client.force_login(operator)
    pages = tenant_pages(tenant_a.slug)
    for name in ("dashboard", "usage", "keys", "billing"):
        assert client.get(pages[name]).status_code == 200, name
    assert client.get(pages["key-create"]).status_code == 403
    for name in OPS_PAGES:
        assert client.get(reverse(name)).status_code == 200, name


def test_every_portal_view_declares_its_permission():
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern.callback

    checked = 0
    for route, callback in walk(get_resolver().url_patterns):
        if route.startswith(("t/", "ops/")):
            permission = getattr(callback, "portal_permission", None)
            assert permission in PERMISSIONS, f"{route} is not wrapped in portal_view()"
            checked += 1
    assert checked >= 10


def test_home_opens_the_session_tenant(client, tenant_a, tenant_b, owner_a):
    membership_set(user=owner_a, tenant=tenant_b, role="viewer")
    client.force_login(owner_a)
    first = client.get(reverse("home"))
    assert first.status_code == 302
    switched = client.post(reverse("tenant-switch"), {"tenant": tenant_b.slug})
    assert switched.status_code == 302
    assert switched["Location"] == reverse("dashboard", kwargs={"slug": tenant_b.slug})
    assert client.session[SESSION_TENANT] == tenant_b.slug
    assert client.get(reverse("home"))["Location"] == reverse("dashboard", kwargs={"slug": tenant_b.slug})
    # The switcher lists both tenants.
    page = client.get(reverse("dashboard", kwargs={"slug": tenant_b.slug})).content.decode()
    assert 'id="tenant-switcher"' in page
    assert f'value="{tenant_a.slug}"' in page


def test_switching_to_a_foreign_tenant_is_404(client, tenant_a, tenant_b, owner_a):
    client.force_login(owner_a)
    response = client.post(reverse("tenant-switch"), {"tenant": tenant_b.slug})
    assert response.status_code == 404
    assert client.session.get(SESSION_TENANT) != tenant_b.slug


def test_staff_without_membership_land_on_operations(client, operator):
    client.force_login(operator)
    assert client.get(reverse("home"))["Location"] == reverse("ops-tenants")


def test_user_without_tenant_gets_a_welcome_page(client, db):
    client.force_login(make_user("lonely@example.test"))
    response = client.get(reverse("home"))
    assert response.status_code == 200
    assert b"No tenant yet" in response.content
