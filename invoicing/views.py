"""Browser downloads: the finance export for staff, an invoice's PDF or CSV for its tenant's people.

Thin: check who asks, call an export, send the file. The portal's pages link here, and each
download asks the same question of accounts.roles as the page that links it: the
invoice files need `billing.view` (the billing page; a viewer gets 403, a stranger 404), the
finance export needs `ops.view` (the operators' tenants page, staff only).
"""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from accounts import roles
from invoicing import exports, pdf, selectors
from invoicing.services import parse_period

EXPORT_KINDS = ("bills", "reconciliation")


@require_GET
@login_required
def finance_export(request: HttpRequest) -> HttpResponse:
    """GET ?period=YYYY-MM[&kind=bills|reconciliation][&bom=1]: all tenants, staff only."""
    if not roles.allows(roles.roles_for(user=request.user, tenant=None), "ops.view"):
        raise PermissionDenied("Finance exports are for staff.")
    try:
        year, month = parse_period(request.GET.get("period", ""))
    except ValueError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    kind = request.GET.get("kind", "bills")
    if kind not in EXPORT_KINDS:
        return HttpResponse(f"kind must be one of {', '.join(EXPORT_KINDS)}.", status=400, content_type="text/plain")
    bom = request.GET.get("bom") in ("1", "true", "yes")
    period = f"{year:04d}-{month:02d}"
    if kind == "bills":
        body = exports.bills_csv(period=period, bom=bom)
    else:
        body = exports.reconciliation_csv(year=year, month=month, bom=bom)
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{kind}-{period}.csv"'
    return response


@require_GET
@login_required
def invoice_download(request: HttpRequest, pk: int, rendition: str) -> HttpResponse:
    """An invoice as PDF or CSV, for whoever may open its tenant's billing page (`billing.view`).

    Like the page: a user with no role in the tenant gets 404 (the invoice's existence is not
    told), a member whose role lacks billing.view (a viewer) gets 403.
    """
    invoice = selectors.invoice_with_lines(invoice_id=pk)
    if invoice is None:
        raise Http404
    held = roles.roles_for(user=request.user, tenant=invoice.tenant)
    if not held:
        raise Http404
    if not roles.allows(held, "billing.view"):
        raise PermissionDenied("Your role may not open this tenant's billing (billing.view).")
    name = invoice.number or f"draft-{invoice.period}-{invoice.pk}"
    if rendition == "pdf":
        response = HttpResponse(pdf.invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{name}.pdf"'
    else:
        response = HttpResponse(exports.invoice_csv(invoice), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response
