"""Invariant 6: the tenant comes from the credential. Tenant B's key sees nothing of tenant A."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from metering.models import UsageEvent
from tests.factories import EventBodyFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("any_past_timestamp")]  # events in 2020

RANGE = {"from": "2020-01-01", "to": "2020-12-31"}


@pytest.fixture
def a_event(key_a) -> dict:
    response = key_a.post("/api/v1/events", EventBodyFactory(model="gpt-4o", timestamp="2020-06-01T12:00:00Z"))
    assert response.status_code == 201
    return response.json()


def test_b_reads_none_of_a_usage(key_a, key_b, a_event):
    for group_by in ("day", "model", "api_key"):
        response = key_b.get("/api/v1/usage", {**RANGE, "group_by": group_by})
        assert response.status_code == 200
        assert response.json()["results"] == []
    key_b.post("/api/v1/events", EventBodyFactory(model="gpt-4o-mini", timestamp="2020-06-02T12:00:00Z"))
    by_key = key_b.get("/api/v1/usage", {**RANGE, "group_by": "api_key"}).json()["results"]
    assert [row["group"] for row in by_key] == [key_b.row.pk]
    by_model = key_b.get("/api/v1/usage", {**RANGE, "group_by": "model"}).json()["results"]
    assert [(row["group"], row["requests"]) for row in by_model] == [("gpt-4o-mini", 1)]
    # A still sees exactly its own.
    mine = key_a.get("/api/v1/usage", {**RANGE, "group_by": "model"}).json()["results"]
    assert [(row["group"], row["requests"]) for row in mine] == [("gpt-4o", 1)]


def test_event_ids_of_another_tenant_are_404(key_a, key_b, a_event):
    own = key_a.get(f"/api/v1/events/{a_event['id']}")
    assert own.status_code == 200
    assert own.json()["request_id"] == a_event["request_id"]
    other = key_b.get(f"/api/v1/events/{a_event['id']}")
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    # Indistinguishable from an id that does not exist at all.
    missing = key_b.get(f"/api/v1/events/{a_event['id'] + 10_000}")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == set(other.json()["error"]) == {"code", "message", "details"}
    assert key_b.get("/api/v1/events/99999999999999999999").status_code == 404


def _id_routes(resolver=None, prefix="") -> list[str]:
    """Every API route that takes an integer id, as a path template."""
    resolver = resolver or get_resolver()
    found = []
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found += _id_routes(pattern, route)
        elif isinstance(pattern, URLPattern) and route.startswith("api/v1/") and "<int:" in route:
            found.append(route)
    return found


def test_every_id_route_of_the_event_kind_answers_404_across_tenants(key_b, a_event):
    """Any id-bearing route under /api/v1/events answers 404 to another tenant's event id."""
    routes = [route for route in _id_routes() if route.startswith("api/v1/events")]
    assert routes, "expected at least GET /api/v1/events/<id>"
    for route in routes:
        name = route[route.index("<int:") + 5 : route.index(">")]
        path = "/" + route.replace(f"<int:{name}>", str(a_event["id"]))
        assert key_b.get(path).status_code == 404, path


@pytest.mark.parametrize("param", ["tenant", "tenant_id", "tenant_slug"])
def test_tenant_in_the_query_is_refused(key_b, tenant_a, a_event, param):
    for value in (tenant_a.slug, tenant_a.pk):
        response = key_b.get("/api/v1/usage", {**RANGE, param: value})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "unknown_field"
        assert param in response.json()["error"]["message"]
        detail = key_b.get(f"/api/v1/events/{a_event['id']}", {param: value})
        assert detail.status_code == 400


@pytest.mark.parametrize("field", ["tenant", "tenant_id"])
def test_tenant_in_the_body_is_refused(key_b, tenant_a, field):
    single = key_b.post("/api/v1/events", EventBodyFactory(**{field: tenant_a.slug}))
    assert single.status_code == 400
    assert single.json()["error"]["details"] == {"field": field}
    batch = key_b.post("/api/v1/events/batch", {"events": [EventBodyFactory(**{field: tenant_a.pk})]})
    assert batch.json()["results"][0]["error"]["code"] == "unknown_field"
    top = key_b.post("/api/v1/events/batch", {"events": [EventBodyFactory()], field: tenant_a.slug})
    assert top.status_code == 400
    tokenize = key_b.post("/api/v1/tokenize", {"model": "gpt-4o", "text": "x", field: tenant_a.slug})
    assert tokenize.status_code == 400
    assert not UsageEvent.objects.filter(tenant=tenant_a).exists()


def test_a_tenant_key_cannot_act_for_another_key(key_a, key_b, tenant_a, a_event):
    """api_key is a service-token field: a tenant key naming A's key is refused, everywhere."""
    event = key_b.post("/api/v1/events", EventBodyFactory(api_key=key_a.row.pk))
    assert event.status_code == 400
    assert event.json()["error"]["details"] == {"field": "api_key"}
    usage = key_b.get("/api/v1/usage", {**RANGE, "api_key": key_a.row.pk})
    assert usage.status_code == 400
    detail = key_b.get(f"/api/v1/events/{a_event['id']}", {"api_key": key_a.row.pk})
    assert detail.status_code == 400
    assert UsageEvent.objects.filter(tenant=tenant_a).count() == 1


def test_service_token_gets_the_named_keys_tenant_only(service, key_a, key_b, a_event):
    as_b = service.get(f"/api/v1/events/{a_event['id']}", {"api_key": key_b.row.pk})
    assert as_b.status_code == 404
    as_a = service.get(f"/api/v1/events/{a_event['id']}", {"api_key": key_a.row.pk})
    assert as_a.status_code == 200
    usage = service.get("/api/v1/usage", {**RANGE, "api_key": key_b.row.pk})
    assert usage.json()["results"] == []


def test_same_request_id_in_two_tenants_reads_back_separately(key_a, key_b):
    body = EventBodyFactory(request_id="shared", timestamp="2020-06-01T12:00:00Z")
    a = key_a.post("/api/v1/events", body).json()
    b = key_b.post("/api/v1/events", {**body, "output_tokens": 1}).json()
    assert a["id"] != b["id"]
    assert key_a.get(f"/api/v1/events/{a['id']}").json()["output_tokens"] == 500
    assert key_b.get(f"/api/v1/events/{b['id']}").json()["output_tokens"] == 1
