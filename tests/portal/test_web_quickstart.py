"""The Quick start page and relayed usage in the usage explorer and its export."""

import pytest
from django.urls import reverse

from metering.services.ingest import RelayFacts, usage_record_batch
from relay.services.upstreams import upstream_save
from tests.portal.web_support import rollup

pytestmark = pytest.mark.django_db


def test_quickstart_shows_base_url_keys_and_models(client, tenant_a, key_a, owner_a, settings):
    settings.RELAY_BASE_URL = "https://relay.example.com/v1"
    upstream_save(name="up", base_url="https://up.example/v1", model_map={"gpt-4o": "", "gpt-4o-*": "", "x": ""})
    key_a.row.allowed_models = ["gpt-4o*"]
    key_a.row.save()
    client.force_login(owner_a)
    response = client.get(reverse("quickstart", kwargs={"slug": tenant_a.slug}))
    body = response.content.decode()
    assert response.status_code == 200
    assert 'OpenAI(base_url="https://relay.example.com/v1"' in body
    assert f"<code>{key_a.row.prefix}…</code>" in body
    assert response.context["models"] == ["gpt-4o"]  # globs cannot be listed, "x" is not allowed
    assert key_a.secret not in body


def test_quickstart_is_for_members_only(client, tenant_a, owner_b):
    client.force_login(owner_b)
    assert client.get(reverse("quickstart", kwargs={"slug": tenant_a.slug})).status_code == 404


def test_relayed_events_show_upstream_and_latency(client, tenant_a, key_a, owner_a):
    event = {"request_id": "relay-1", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5, "latency_ms": 900}
    usage_record_batch(
        raw_events=[event], api_key=key_a.row, relayed={"relay-1": RelayFacts(upstream="primary", ttft_ms=120)}
    )
    rollup(tenant_a)
    client.force_login(owner_a)
    page = client.get(reverse("usage", kwargs={"slug": tenant_a.slug})).content.decode()
    assert "first token 120 ms" in page and "primary" in page
    csv = b"".join(client.get(reverse("usage-csv", kwargs={"slug": tenant_a.slug})).streaming_content).decode()
    header, row = csv.splitlines()[:2]
    assert header.endswith("latency_ms,ttft_ms,upstream") and row.endswith("900,120,primary")
