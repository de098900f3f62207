"""factory_boy factories. Credentials are issued through the real service (hash included)."""

import datetime as dt
from decimal import Decimal

import factory

from accounts import services
from accounts.models import ApiKey, ServiceToken, Tenant
from billing.models import Price, PricePlan
from billing.services.ledger import ledger_post


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


class EventBodyFactory(factory.DictFactory):
    """The JSON body of one usage event, as a client posts it (a fresh request_id each time)."""

    request_id = factory.Sequence(lambda n: f"req-{n:06d}")
    model = "gpt-4o"
    input_tokens = 1000
    output_tokens = 500


def event_bodies(count: int, **overrides) -> list[dict]:
    return [EventBodyFactory(**overrides) for _ in range(count)]


def topup(tenant: Tenant, amount: str, *, reference: str = "test-topup") -> None:
    """Credit the wallet through the ledger service (the only write path for money)."""
    ledger_post(
        tenant_id=tenant.pk,
        currency=tenant.currency,
        kind="topup",
        amount=Decimal(amount),
        idempotency_key=f"topup:{reference}",
        reference=reference,
        actor_label="test",
    )
