"""Demo data for trying the portal: one tenant, users, a key, prices and weeks of usage; and
resale: the demo plan is sold 1.25x over a provider cost plan, and a second tenant buys from a
CNY plan 1.3x over the same provider prices at an exchange rate of 7.3 (the ops Margins page)."""

import datetime as dt
import hashlib
import random
import secrets
import zoneinfo
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from accounts import selectors, services
from accounts.models import Membership
from alerts import services as alert_services
from billing.rating import rate
from billing.selectors import price_book_for_tenant, tenant_quotas
from billing.services.ledger import ledger_post, wallet_ensure
from billing.services.pricing import plan_get_or_create, price_add
from billing.services.quotas import quota_create
from billing.services.resale import exchange_rate_set, markup_set, plan_set_cost_plan
from invoicing.services import invoices_close_month
from metering.models import UsageEvent
from metering.partitions import month_start
from metering.services.archive import usage_archive_month
from metering.services.event_store import NewEvent, insert_new
from metering.services.ingest import RelayFacts, usage_record_batch
from metering.services.rollup import rollup_tenant
from relay.services.upstreams import upstream_save

# Service-tier rows of the demo prices (OpenAI's): priority dearer, batch half price.
DEMO_TIERS = [  # model, tier, input, output, cached input
    ("gpt-4o", "priority", "4.25", "17", "2.125"),
    ("gpt-4o", "batch", "1.25", "5", "1.25"),
    ("gpt-4.1", "priority", "3.5", "14", "0.875"),
    ("gpt-4.1", "batch", "1", "4", "0.5"),
]
DEMO_PRICES = [  # per 1M tokens: input, output, cached input
    ("gpt-4o", "2.5", "10", "1.25"),
    ("gpt-4o-mini", "0.15", "0.6", "0.075"),
    ("gpt-4.1", "2", "8", "0.5"),
    ("o3-mini", "1.1", "4.4", "0.55"),
    ("claude-sonnet-4*", "3", "15", "0.3"),
]
# Resale: the provider's prices (cost) are the demo prices / 1.25, so the demo plan derived 1.25x
# over them sells at exactly DEMO_PRICES. The CNY plan sells 1.3x over them at 7.3 CNY per USD.
DEMO_MARKUP = Decimal("1.25")
CNY_MARKUP, CNY_RATE = Decimal("1.3"), Decimal("7.3")
DEMO_TRAFFIC = [("gpt-4o", 0.35), ("gpt-4o-mini", 0.35), ("gpt-4.1", 0.1), ("o3-mini", 0.1), ("claude-sonnet-4-5", 0.1)]
OWNER_EMAIL = "demo@example.com"
OPERATOR_EMAIL = "ops@example.com"
# The relay's demo upstream: `manage.py relay_mock_upstream`, which `make run` starts.
DEMO_UPSTREAM_URL = "http://127.0.0.1:8089/v1"
DEMO_RELAYED_MODELS = {"gpt-4o": "", "gpt-4o-mini": "", "gpt-4.1": "", "o3-mini": ""}


class Command(BaseCommand):
    help = "Create (or refresh) demo data and print a demo login and API key. Safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days", type=int, default=40, help="Days of usage history (default 40: last month gets an invoice)."
        )
        parser.add_argument("--per-day", type=int, default=150, help="Events per day on average (default 150).")

    def handle(self, *args, **options) -> None:
        plan = plan_get_or_create(slug="demo", name="Demo plan", currency="USD", actor_label="seed_demo")
        cny_plan = None
        if not plan.prices.exists():
            start = timezone.now() - dt.timedelta(days=settings.INGEST_MAX_PAST_DAYS + 120)  # the archived month too
            cny_plan = self._resale_plans(plan, start=start)
        tenant = selectors.tenant_by_slug("demo")
        fresh = tenant is None
        if tenant is None:
            tenant = services.tenant_create(
                name="Demo Inc.",
                slug="demo",
                timezone_name="Asia/Shanghai",
                price_plan_id=plan.pk,
                actor_label="seed_demo",
            )
        wallet_ensure(tenant_id=tenant.pk, currency=tenant.currency)
        upstream_save(name="demo-mock", base_url=DEMO_UPSTREAM_URL, model_map=DEMO_RELAYED_MODELS, api_key="demo")
        ledger_post(
            tenant_id=tenant.pk,
            currency=tenant.currency,
            kind="topup",
            amount=Decimal("500.00"),
            idempotency_key="seed-demo-initial-topup",
            reference="demo credit",
            actor_label="seed_demo",
        )
        password = secrets.token_urlsafe(12)  # 16 characters: passes AUTH_PASSWORD_VALIDATORS
        self._user(OWNER_EMAIL, password, tenant=tenant, staff=False)
        self._user(OPERATOR_EMAIL, password, tenant=None, staff=True)
        key, secret = services.api_key_create(tenant=tenant, name="demo key", actor_label="seed_demo")
        if fresh:
            batch_key, _ = services.api_key_create(tenant=tenant, name="batch jobs", actor_label="seed_demo")
            self._usage([key, batch_key], days=options["days"], per_day=options["per_day"])
            archived = self._old_month(tenant, key)
            # The dashboard reads the daily rollups: build them now rather than at the next beat.
            rollup_tenant(tenant_id=tenant.pk)
            # A month past the retention, archived as beat would (its rollups stay).
            result = usage_archive_month(month=archived, now=timezone.now())
            self.stdout.write(
                f"  {archived:%Y-%m}: {result.rows} events archived to {result.period:%Y-%m} in the archive."
            )
            quota_create(tenant=tenant, metric="tokens", window="month", limit=Decimal(20_000_000),
                         enforcement="soft", actor_label="seed_demo")  # fmt: skip
            # Limits and restrictions to look at in the portal, set once the history is in
            # (they would have throttled and flagged its ingest); the printed key has none.
            services.api_key_set_controls(
                api_key=batch_key,
                expires_at=timezone.now() + dt.timedelta(days=180),
                allowed_models=["gpt-4o-mini", "o3-mini", "claude-sonnet-4*"],
                allowed_networks=["10.0.0.0/8", "127.0.0.1"],
                rpm_limit=600,
                tpm_limit=200_000,
                max_parallel_requests=20,
                actor_label="seed_demo",
            )
            services.tenant_set_limits(
                tenant=tenant, rpm_limit=6_000, tpm_limit=None, max_parallel_requests=None, actor_label="seed_demo"
            )
            self._alerts(tenant)
            self._last_month_invoice(tenant)
        if cny_plan is not None:
            self._cny_tenant(cny_plan, days=options["days"], per_day=max(options["per_day"] // 5, 1))
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(f"  Portal login:   {OWNER_EMAIL} / {password}   (tenant owner)")
        self.stdout.write(f"  Operator login: {OPERATOR_EMAIL} / {password}   (staff)")
        self.stdout.write(f"  Demo API key:   {secret}")

    def _resale_plans(self, plan, *, start: dt.datetime):
        """The provider's cost plan, the demo plan derived 1.25x over it, and a CNY plan 1.3x over it."""
        provider = plan_get_or_create(slug="provider", name="Provider prices", currency="USD", actor_label="seed_demo")
        rows = [(model, "default", inp, out, cached) for model, inp, out, cached in DEMO_PRICES] + DEMO_TIERS
        for model, tier, inp, out, cached in rows:
            price_add(
                plan=provider,
                model_pattern=model,
                service_tier=tier,
                input_per_mtok=Decimal(inp) / DEMO_MARKUP,
                output_per_mtok=Decimal(out) / DEMO_MARKUP,
                cached_input_per_mtok=Decimal(cached) / DEMO_MARKUP,
                effective_from=start,
                source="seed_demo",
                actor_label="seed_demo",
                max_output_tokens=32_768,
            )
        plan_set_cost_plan(plan=plan, cost_plan=provider, actor_label="seed_demo")
        markup_set(plan=plan, model_pattern="*", multiplier=DEMO_MARKUP, effective_from=start, actor_label="seed_demo")
        cny = plan_get_or_create(slug="demo-cny", name="Demo plan, CNY", currency="CNY", actor_label="seed_demo")
        plan_set_cost_plan(plan=cny, cost_plan=provider, actor_label="seed_demo")
        exchange_rate_set(base="USD", quote="CNY", rate=CNY_RATE, effective_from=start, actor_label="seed_demo")
        markup_set(plan=cny, model_pattern="*", multiplier=CNY_MARKUP, effective_from=start, actor_label="seed_demo")
        return cny

    def _cny_tenant(self, plan, *, days: int, per_day: int) -> None:
        """A second tenant buying in CNY, with some usage: its margin shows on the ops Margins page."""
        tenant = services.tenant_create(
            name="Demo Shanghai",
            slug="demo-cn",
            timezone_name="Asia/Shanghai",
            currency="CNY",
            price_plan_id=plan.pk,
            actor_label="seed_demo",
        )
        wallet_ensure(tenant_id=tenant.pk, currency="CNY")
        ledger_post(
            tenant_id=tenant.pk,
            currency="CNY",
            kind="topup",
            amount=Decimal("3000.00"),
            idempotency_key="seed-demo-cn-initial-topup",
            reference="demo credit",
            actor_label="seed_demo",
        )
        key, _ = services.api_key_create(tenant=tenant, name="demo-cn key", actor_label="seed_demo")
        self._usage([key], days=days, per_day=per_day)
        rollup_tenant(tenant_id=tenant.pk)

    def _alerts(self, tenant) -> None:
        """An email channel and the rules a tenant would set: balance, monthly spend, the quota."""
        channel = alert_services.notification_channel_create(
            tenant=tenant, kind="email", name="Finance inbox", config={"recipients": [OWNER_EMAIL]}
        )
        quota = tenant_quotas(tenant_id=tenant.pk)[0]
        alert_services.alert_rule_create(
            tenant=tenant, kind="balance", channels=[channel], name="Prepaid balance", amount=Decimal("500")
        )
        alert_services.alert_rule_create(
            tenant=tenant, kind="spend", channels=[channel], name="Monthly budget", amount=Decimal("400")
        )
        alert_services.alert_rule_create(
            tenant=tenant, kind="quota", channels=[channel], name="Monthly tokens", quota_id=quota.pk
        )

    def _last_month_invoice(self, tenant) -> None:
        """Last month's invoice, issued (a draft while the month's grace period runs)."""
        today = timezone.localdate(timezone=zoneinfo.ZoneInfo(tenant.timezone))
        last = today.replace(day=1) - dt.timedelta(days=1)
        invoices_close_month(year=last.year, month=last.month, tenant=tenant, finalize=True, actor_label="seed_demo")

    def _user(self, email: str, password: str, *, tenant, staff: bool) -> None:
        user = get_user_model().objects.filter(username=email).first()
        if user is None:
            services.user_create(
                email=email, password=password, is_staff=staff, tenant=tenant,
                role=Membership.Role.OWNER, actor_label="seed_demo",
            )  # fmt: skip
        else:
            user.set_password(password)
            user.save(update_fields=["password"])

    def _old_month(self, tenant, key) -> dt.date:
        """History from before ingest's window (as if imported): the month the demo archives."""
        now = timezone.now()
        month = month_start(now - dt.timedelta(days=settings.INGEST_MAX_PAST_DAYS + 40))
        start = dt.datetime.combine(month, dt.time(), tzinfo=dt.UTC)
        book = price_book_for_tenant(tenant=tenant, models={"gpt-4o", "gpt-4o-mini"})
        events = []
        for n in range(120):
            model = "gpt-4o" if n % 2 else "gpt-4o-mini"
            at = start + dt.timedelta(hours=6 * n)
            terms = book.terms_for(model, at) if book is not None else None
            cost = (
                rate(terms, input_tokens=800, output_tokens=200, cached_input_tokens=0, cache_write_tokens=0)
                if terms is not None
                else None
            )
            events.append(
                NewEvent(
                    tenant_id=tenant.pk, api_key_id=key.pk, request_id=f"demo-old-{n}", model=model,
                    input_tokens=800, output_tokens=200, cached_input_tokens=0, cache_write_tokens=0,
                    occurred_at=at, received_at=at, latency_ms=None, metadata={},
                    token_source=UsageEvent.TokenSource.REPORTED, encoding="", cost=cost, currency=tenant.currency,
                    price_id=terms.price_id if terms is not None else None,
                    body_hash=hashlib.sha256(f"demo-old-{n}".encode()).hexdigest(),
                )
            )  # fmt: skip
        insert_new(events)
        return month

    def _usage(self, keys, *, days: int, per_day: int) -> None:
        rng = random.Random(20261123)  # noqa: S311 - demo data, not security
        now = timezone.now()
        models, weights = zip(*DEMO_TRAFFIC, strict=True)
        events = []
        for day in range(days, -1, -1):
            for n in range(int(per_day * rng.uniform(0.6, 1.4))):
                moment = now - dt.timedelta(days=day, seconds=rng.uniform(0, 86_000))
                if moment > now:
                    continue
                prompt = int(rng.lognormvariate(7, 0.9))
                tier = rng.choices(("default", "priority", "batch"), (0.8, 0.1, 0.1))[0]
                events.append(
                    {
                        "request_id": f"demo-{day}-{n}",
                        "service_tier": tier,
                        "model": rng.choices(models, weights)[0],
                        "input_tokens": prompt,
                        "output_tokens": int(rng.lognormvariate(5.5, 0.8)),
                        "cached_input_tokens": int(prompt * rng.choice([0, 0, 0.5, 0.8])),
                        "timestamp": moment.isoformat(),
                        "latency_ms": int(rng.uniform(200, 4000)),
                    }
                )
        # The last day's calls of the first key came through the relay: they name its upstream.
        relayed = {
            e["request_id"]: RelayFacts(upstream="demo-mock", ttft_ms=int(e["latency_ms"] * rng.uniform(0.1, 0.4)))
            for e in events
            if e["request_id"].startswith("demo-0-")
        }
        for index, key in enumerate(keys):  # the first key takes two thirds of the traffic
            mine = [e for n, e in enumerate(events) if (n % 3 != 2) == (index == 0)]
            for start in range(0, len(mine), 500):
                usage_record_batch(raw_events=mine[start : start + 500], api_key=key, relayed=relayed)
        self.stdout.write(f"  {len(events)} usage events over {days} days recorded.")
