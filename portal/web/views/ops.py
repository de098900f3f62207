"""Operators (staff): every tenant's money, the platform's top tenants, plans, top-ups, credit
notes, audit."""

import datetime as dt
import importlib.util
import json
import logging
import zoneinfo
from pathlib import Path

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts import selectors as account_selectors
from billing import selectors as billing_selectors
from billing.services.catalog import prices_import_litellm
from billing.services.topups import wallet_topup
from invoicing import selectors as invoicing_selectors
from invoicing import services as invoicing_services
from metering import selectors as usage_selectors
from portal.web import charts
from portal.web.access import PortalContext, portal_view
from portal.web.forms import CatalogImportForm, CreditNoteForm, TopupForm
from portal.web.ranges import today_for
from portal.web.stores import stores_status
from portal.web.views.common import int_param, page

logger = logging.getLogger(__name__)

TOP_TENANTS_DAYS = 30
UNPRICED_ROWS = 100  # tenant x model rows of unpriced usage shown, most events first
UNPRICED_RECENT_HOURS = 24
TOPUP_ACTION = "wallet.topup"  # what billing.services.topups audits
AUDIT_PAGE_SIZE = 50
CATALOG_MAX_BYTES = 64 * 1024 * 1024
BUNDLED_CATALOG = "model_prices_and_context_window_backup.json"


def _month_start(tz_name: str) -> dt.date:
    """The first day of the tenant's local month; UTC's for a zone the database should never hold.

    Every write path validates the zone, but one tenant's damaged row must not take the
    operators' page (every tenant's figures) down with it; its jobs are recorded as failing.
    """
    try:
        return today_for(tz_name).replace(day=1)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        logger.warning("tenant time zone unknown; month-to-date cut in UTC", extra={"tz_name": tz_name[:64]})
        return today_for("UTC").replace(day=1)


@portal_view("ops.view")
def tenants(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    """All tenants with balance and month-to-date spend (each tenant's own local month)."""
    rows = account_selectors.all_tenants()
    month_starts = {t.pk: _month_start(t.timezone) for t in rows}
    spend = usage_selectors.spend_by_tenant(since_by_tenant=month_starts)
    balances = billing_selectors.wallet_balances(tenant_ids=[t.pk for t in rows])
    names = {t.pk: t.name for t in rows}
    table = [
        {
            "tenant": t,
            "balance": balances.get(t.pk),
            "mtd_cost": spend.get(t.pk, {}).get("cost"),
            "mtd_tokens": spend.get(t.pk, {}).get("tokens", 0),
            "mtd_requests": spend.get(t.pk, {}).get("requests", 0),
        }
        for t in rows
    ]
    today = timezone.now().date()
    top = usage_selectors.top_tenants(start_day=today - dt.timedelta(days=TOP_TENANTS_DAYS - 1), end_day=today)
    figures = {
        "top-tenants-tokens": charts.top_tenants(top["tokens"], names, metric="tokens"),
        "top-tenants-cost": charts.top_tenants(top["cost"], names, metric="cost"),
    }
    last_month = (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    unpriced = usage_selectors.unpriced_usage(
        now=timezone.now(), recent=dt.timedelta(hours=UNPRICED_RECENT_HOURS), limit=UNPRICED_ROWS
    )
    by_id = {t.pk: t for t in rows}
    unpriced_rows = [{"usage": row, "tenant": by_id.get(row.tenant_id)} for row in unpriced]
    return page(
        request,
        "portal/ops/tenants.html",
        {
            "rows": table,
            "charts": figures,
            "days": TOP_TENANTS_DAYS,
            "last_month": last_month,
            "unpriced": unpriced_rows,
            "unpriced_recent_hours": UNPRICED_RECENT_HOURS,
        },
    )


MARGIN_MONTHS_DEFAULT, MARGIN_MONTHS_MAX = 3, 24


@portal_view("ops.view")
def margins(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    """Revenue, our cost and the gross margin by tenant, model and month, from the rollups
    (resale: docs/billing-rules.md section 9). `months`: this month and the N-1 before it."""
    months = int_param(request.GET.get("months")) or MARGIN_MONTHS_DEFAULT
    months = min(max(months, 1), MARGIN_MONTHS_MAX)
    today = timezone.now().date()
    start = today.replace(day=1)
    for _month in range(months - 1):
        start = (start - dt.timedelta(days=1)).replace(day=1)
    names = {t.pk: f"{t.name} ({t.slug})" for t in account_selectors.all_tenants()}
    # Rollup days are tenant-local: east of UTC a tenant's today is already tomorrow's UTC date.
    latest_local_day = today + dt.timedelta(days=1)
    report = usage_selectors.gross_margins(start_day=start, end_day=latest_local_day, tenant_names=names)
    return page(
        request,
        "portal/ops/margins.html",
        {"report": report, "start": start, "end": today, "months": months, "month_choices": (1, 3, 6, 12, 24)},
    )


@portal_view("ops.view")
def plans(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    all_plans = billing_selectors.price_plans()
    return page(request, "portal/ops/plans.html", {"plans": all_plans, "form": CatalogImportForm(plans=all_plans)})


@portal_view("ops.view")
def plan_detail(request: HttpRequest, portal: PortalContext, plan_id: int) -> HttpResponse:
    plan = billing_selectors.price_plan_by_id(plan_id)
    if plan is None:
        raise Http404("No such price plan.")
    prices = billing_selectors.plan_current_prices(plan_id=plan.pk, at=timezone.now())
    return page(request, "portal/ops/plan_detail.html", {"plan": plan, "prices": prices})


def _bundled_catalog() -> dict:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise ValidationError(_("The litellm package (which bundles the catalog) is not installed."))
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_CATALOG
    return json.loads(path.read_text(encoding="utf-8"))


@portal_view("ops.manage")
def plan_import(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    all_plans = billing_selectors.price_plans()
    form = CatalogImportForm(request.POST or None, request.FILES or None, plans=all_plans)
    if request.method != "POST" or not form.is_valid():
        status = 400 if request.method == "POST" else 200
        return page(request, "portal/ops/plans.html", {"plans": all_plans, "form": form}, status=status)
    plan = billing_selectors.price_plan_by_id(form.cleaned_data["plan"])
    assert plan is not None
    upload = form.cleaned_data.get("catalog")
    try:
        if upload is not None:
            if upload.size > CATALOG_MAX_BYTES:
                raise ValidationError(_("The catalog file is too large."))
            catalog, source = json.loads(upload.read().decode("utf-8")), f"upload:{upload.name}"
        else:
            catalog, source = _bundled_catalog(), "litellm bundled catalog"
        result = prices_import_litellm(plan=plan, catalog=catalog, actor_label=str(request.user), source=source)
    except (ValueError, UnicodeDecodeError) as error:  # json.JSONDecodeError is a ValueError
        form.add_error("catalog", _("Not a JSON catalog: %(error)s") % {"error": error})
        return page(request, "portal/ops/plans.html", {"plans": all_plans, "form": form}, status=400)
    except ValidationError as error:
        form.add_error(None, " ".join(error.messages))
        return page(request, "portal/ops/plans.html", {"plans": all_plans, "form": form}, status=400)
    messages.success(
        request,
        _("Imported into %(plan)s: %(created)s new price versions, %(unchanged)s unchanged, %(skipped)s skipped.")
        % {"plan": plan.slug, "created": result.created, "unchanged": result.unchanged, "skipped": result.skipped},
    )
    return redirect("ops-plan", plan_id=plan.pk)


@portal_view("ops.manage")
def topup(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    all_tenants = account_selectors.all_tenants()
    form = TopupForm(request.POST or None, tenants=all_tenants, initial={"tenant": request.GET.get("tenant")})
    if request.method == "POST" and form.is_valid():
        tenant = account_selectors.tenant_by_slug(form.cleaned_data["tenant"])
        assert tenant is not None
        try:
            entry, created = wallet_topup(
                tenant=tenant,
                amount=form.cleaned_data["amount"],
                reference=form.cleaned_data["reference"],
                actor=request.user,
            )
        except ValidationError as error:
            form.add_error(None, " ".join(error.messages))
        else:
            if created:
                messages.success(
                    request,
                    _("%(amount)s %(currency)s credited to %(tenant)s.")
                    % {"amount": entry.amount, "currency": tenant.currency, "tenant": tenant.name},
                )
            else:
                messages.info(request, _("A top-up with this reference was already recorded; nothing changed."))
            return redirect("ops-topup")
    recent, _next = account_selectors.audit_log_page(action_prefix=TOPUP_ACTION, limit=20)
    status = 400 if request.method == "POST" else 200
    return page(request, "portal/ops/topup.html", {"form": form, "recent": recent}, status=status)


@portal_view("ops.manage")
def credit_notes(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    """Issue a credit note against a finalized or paid invoice; list the latest ones."""
    form = CreditNoteForm(request.POST or None, initial={"invoice": request.GET.get("invoice", "")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        invoice = invoicing_selectors.invoice_by_number(data["invoice"])
        if invoice is None:
            form.add_error("invoice", _("No issued invoice has this number (drafts have none yet)."))
        else:
            try:
                amount = (
                    invoicing_services.credit_note_amount(data["amount"], invoice.currency) if data["amount"] else None
                )
                note = invoicing_services.credit_note_issue(
                    invoice=invoice, reason=data["reason"], amount=amount, actor=request.user
                )
            except invoicing_services.InvoiceError as error:
                form.add_error(None, str(error))
            else:
                messages.success(
                    request,
                    _("%(number)s: %(amount)s %(currency)s credited to %(tenant)s.")
                    % {
                        "number": note.number,
                        "amount": note.amount,
                        "currency": note.currency,
                        "tenant": invoice.tenant.name,
                    },
                )
                return redirect("ops-credit-notes")
    status = 400 if request.method == "POST" else 200
    recent = invoicing_selectors.credit_notes_recent(limit=20)
    return page(request, "portal/ops/credit_notes.html", {"form": form, "recent": recent}, status=status)


@portal_view("ops.view")
def audit(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    tenant_slug = request.GET.get("tenant", "")
    tenant = account_selectors.tenant_by_slug(tenant_slug) if tenant_slug else None
    if tenant_slug and tenant is None:
        raise Http404("No such tenant.")
    entries, next_before = account_selectors.audit_log_page(
        tenant_id=tenant.pk if tenant else None,
        action_prefix=request.GET.get("action", "").strip()[:64],
        before_id=int_param(request.GET.get("before")),
        limit=AUDIT_PAGE_SIZE,
    )
    query = request.GET.copy()
    query.pop("before", None)
    return page(
        request,
        "portal/ops/audit.html",
        {
            "entries": entries,
            "next_before": next_before,
            "tenant": tenant,
            "tenants": account_selectors.all_tenants(),
            "action": request.GET.get("action", ""),
            "query": query.urlencode(),
            "is_first_page": not request.GET.get("before"),
        },
    )


@portal_view("ops.view")
def jobs(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    """Tenants a periodic job is failing for: what failed, since when, when it is tried again."""
    return page(
        request, "portal/ops/jobs.html", {"failures": billing_selectors.failing_tenants(), "stores": stores_status()}
    )
