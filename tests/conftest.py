"""Shared fixtures: two tenants with keys, a price plan, and an API client per credential.

Tests run against real PostgreSQL (DATABASE_URL) and Redis (REDIS_URL), as `make test` sets.
"""

import os

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests import factories

# Balances, holds and quotas on both backends (tests/billing, tests/metering).
# Portal users (owner / admin / finance / viewer / operator) and rolled-up usage (tests/portal, tests/browser).
# A real three-master Redis Cluster, started once per session when a test asks for it.
pytest_plugins = ["tests.portal.web_support", "tests.balance_support", "tests.redis_cluster"]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TOKENBILL_REQUIRE_POSTGRES") == "1":
        engine = settings.DATABASES["default"]["ENGINE"]
        assert "postgresql" in engine, f"tests must run on PostgreSQL, DATABASE_URL gives {engine}"


class Credential:
    """An issued secret with a ready API client."""

    def __init__(self, row, secret: str) -> None:
        self.row = row
        self.secret = secret
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    def post(self, path: str, data=None, **kwargs):
        return self.client.post(path, data, format="json", **kwargs)

    def get(self, path: str, params=None, **kwargs):
        return self.client.get(path, params, **kwargs)


@pytest.fixture
def plan(db):
    plan = factories.PricePlanFactory(slug="standard", currency="USD")
    factories.PriceFactory(
        plan=plan, model_pattern="gpt-4o", input_per_mtok="2.5", output_per_mtok="10", cached_input_per_mtok="1.25"
    )
    factories.PriceFactory(plan=plan, model_pattern="gpt-4o-mini*", input_per_mtok="0.15", output_per_mtok="0.6")
    return plan


@pytest.fixture
def tenant_a(plan):
    return factories.TenantFactory(slug="acme", price_plan=plan)


@pytest.fixture
def tenant_b(plan):
    return factories.TenantFactory(slug="globex", price_plan=plan, timezone="Asia/Shanghai")


@pytest.fixture
def key_a(tenant_a) -> Credential:
    return Credential(*factories.issue_api_key(tenant_a))


@pytest.fixture
def key_b(tenant_b) -> Credential:
    return Credential(*factories.issue_api_key(tenant_b))


@pytest.fixture
def service(db) -> Credential:
    return Credential(*factories.issue_service_token())


@pytest.fixture
def any_past_timestamp(settings) -> None:
    """For tests that post events at fixed dates (2020, last January): the ingest horizon
    (INGEST_MAX_PAST_DAYS) reaches back to its floor, 2000-01-01, so they pass in any year."""
    settings.INGEST_MAX_PAST_DAYS = 100_000


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()
