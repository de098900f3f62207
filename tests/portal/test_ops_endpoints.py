"""Probes, metrics and the API description: /healthz, /readyz, /metrics, /api/schema/, /api/docs/."""

import re

import pytest
import yaml
from django.test import override_settings
from drf_spectacular.validation import validate_schema

from tests.assertions import METRICS_TOKEN, metric_value
from tests.factories import EventBodyFactory

pytestmark = pytest.mark.django_db


def test_healthz(anonymous):
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_the_database_and_redis(anonymous, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN  # the details are for observers (test_exposure.py)
    response = anonymous.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_readyz_reports_an_unreachable_redis(anonymous, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.METRICS_TOKEN = METRICS_TOKEN
    response = anonymous.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"] == {"database": "ok", "redis": "error: ConnectionError"}


def test_metrics_count_ingest_outcomes_with_reasons(key_a, anonymous):
    labels = {
        "accepted": {"outcome": "accepted", "reason": ""},
        "duplicate": {"outcome": "duplicate", "reason": ""},
        "negative": {"outcome": "rejected", "reason": "invalid_field"},
        "unknown": {"outcome": "rejected", "reason": "unknown_field"},
        "conflict": {"outcome": "rejected", "reason": "request_id_conflict"},
    }
    before = {name: metric_value("tokenbill_ingest_events_total", **value) for name, value in labels.items()}
    body = EventBodyFactory()
    key_a.post("/api/v1/events", body)
    key_a.post("/api/v1/events", body)
    key_a.post(
        "/api/v1/events/batch",
        {"events": [body, {**EventBodyFactory(), "input_tokens": -1}, {**body, "output_tokens": 1}, {"x": 1}]},
    )
    after = {name: metric_value("tokenbill_ingest_events_total", **value) for name, value in labels.items()}
    assert {name: after[name] - before[name] for name in labels} == {
        "accepted": 1,
        "duplicate": 2,
        "negative": 1,
        "unknown": 1,
        "conflict": 1,
    }
    with override_settings(METRICS_TOKEN=METRICS_TOKEN):
        text = anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").content.decode()
    assert 'tokenbill_ingest_events_total{outcome="rejected",reason="invalid_field"}' in text
    assert "tokenbill_unpriced_events_total" in text
    assert "tokenbill_ingest_request_seconds_bucket" in text


def _schema(anonymous) -> dict:
    response = anonymous.get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def test_schema_is_valid_openapi_3_listing_the_endpoints(anonymous):
    schema = _schema(anonymous)
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)  # raises on anything that is not OpenAPI 3
    paths = schema["paths"]
    for path, method in [
        ("/api/v1/events", "post"),
        ("/api/v1/events/batch", "post"),
        ("/api/v1/events/{event_id}", "get"),
        ("/api/v1/tokenize", "post"),
        ("/api/v1/usage", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from the schema"
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    for path, operations in paths.items():
        if path.startswith("/api/v1/"):
            for method, operation in operations.items():
                assert {"bearerAuth": []} in operation.get("security", []), f"{method.upper()} {path}"
    batch = paths["/api/v1/events/batch"]["post"]["responses"]
    assert {"200", "413"} <= set(batch)
    assert "409" in paths["/api/v1/events"]["post"]["responses"]


def test_schema_as_json(anonymous):
    response = anonymous.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_docs_render_without_any_cdn(anonymous):
    response = anonymous.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html.lower()
    external = re.findall(r"""(?:src|href)=["'](https?:)?//[^"']+""", html)
    assert external == [], external
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com", "fonts.googleapis.com"):
        assert cdn not in html
    # The assets it names are served by us.
    assets = re.findall(r"""(?:src|href)=["'](/static/[^"']+)["']""", html)
    assert assets
    for asset in assets:
        response = anonymous.get(asset)
        response.close()  # a file response: release the file now
        assert response.status_code == 200, asset
