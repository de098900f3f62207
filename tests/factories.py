"""factory_boy factories. Credentials are issued through the real service (hash included)."""

import datetime as dt
from decimal import Decimal

import factory

from billing.models import Price, PricePlan
from portal.accounts import services
from portal.accounts.models import ApiKey, ServiceToken, Tenant


class PricePlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PricePlan
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Plan {n}")
    slug = factory.Sequence(lambda n: f"plan-{n}")
    currency = "USD"


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Price

    plan = factory.SubFactory(PricePlanFactory)
    model_pattern = "gpt-4o"
    effective_from = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    input_per_mtok = Decimal("2.5")
    output_per_mtok = Decimal("10")


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")
    timezone = "UTC"
    currency = "USD"


def issue_api_key(tenant: Tenant, *, scopes: list[str] | None = None, name: str = "test") -> tuple[ApiKey, str]:
    return services.api_key_create(tenant=tenant, name=name, scopes=scopes or ["ingest", "read"], actor_label="test")


def issue_service_token(name: str = "gateway") -> tuple[ServiceToken, str]:
    return services.service_token_create(name=name, actor_label="test")
