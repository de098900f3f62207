"""Invoice endpoints: read-only, tenant-scoped through TenantAPIView (the read scope).

GET /api/v1/invoices, /api/v1/invoices/{id} and its .csv and .pdf renditions. Another
tenant's id answers 404; there is no write method (405), so an invoice cannot be changed here.
"""

from decimal import Decimal
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from api.errors import ApiError
from api.views import TenantAPIView
from billing.money import currency_exponent
from invoicing import exports, pdf, selectors
from invoicing.models import Invoice, InvoiceLine
from metering.api.schema import ErrorSerializer

_API_KEY_PARAM = OpenApiParameter("api_key", str, description="Service tokens only: the tenant key to act for.")
# The error answers every invoice endpoint gives (one shape, api/errors.py): 400 for an
# unknown parameter or a service token without api_key, 401, 403 (scope, revoked key, suspended
# tenant), 404 for another tenant's id, an unknown one or an unknown named key.
_ERRORS = dict.fromkeys((400, 401, 403, 404), ErrorSerializer)


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:.{currency_exponent(currency)}f}"


def invoice_summary(invoice: Invoice) -> dict[str, Any]:
    cur = invoice.currency
    return {
        "id": invoice.pk,
        "number": invoice.number,
        "status": invoice.status,
        "period": invoice.period,
        "period_start": invoice.period_start,
        "period_end": invoice.period_end,
        "timezone": invoice.timezone,
        "currency": cur,
        "subtotal": _money(invoice.subtotal, cur),
        "credits_applied": _money(invoice.credits_applied, cur),
        "amount_due": _money(invoice.amount_due, cur),
        "finalized_at": invoice.finalized_at,
        "paid_at": invoice.paid_at,
        "voided_at": invoice.voided_at,
        "links": {
            "self": f"/api/v1/invoices/{invoice.pk}",
            "csv": f"/api/v1/invoices/{invoice.pk}.csv",
            "pdf": f"/api/v1/invoices/{invoice.pk}.pdf",
        },
    }


def line_payload(line: InvoiceLine, currency: str) -> dict[str, Any]:
    return {
        "position": line.position,
        "kind": line.kind,
        "usage_period": line.usage_period,
        "model": line.model,
        "token_kind": line.token_kind,
        "price_effective_from": line.price_effective_from,
        "long_context": line.long_context,
        "service_tier": line.service_tier,
        "description": line.description,
        "requests": line.requests,
        "quantity": line.quantity,
        "unit_price_per_1m": str(line.unit_price_per_mtok),
        "unit_price_per_1k": f"{line.unit_price_per_mtok / 1000:.15f}",
        "amount_unrounded": str(line.amount_unrounded),
        "amount": _money(line.amount, currency),
    }


def invoice_detail(invoice: Invoice) -> dict[str, Any]:
    cur = invoice.currency
    return {
        **invoice_summary(invoice),
        "tenant": invoice.tenant.slug,
        "tenant_name": invoice.tenant_name,
        "usage_cutoff": invoice.usage_cutoff,
        "unrounded_total": str(invoice.unrounded_total),
        "issuer": invoice.issuer,
        "lines": [line_payload(line, cur) for line in selectors.lines_of(invoice)],
        "credit_notes": [
            {
                "number": note.number,
                "amount": _money(note.amount, cur),
                "reason": note.reason,
                "issued_at": note.issued_at,
            }
            for note in invoice.credit_notes.all()
        ],
    }


class InvoiceAPIView(TenantAPIView):
    required_scope = "read"

    def tenant_id(self, request: Request) -> int:
        unknown = set(request.query_params.keys()) - {"api_key"}
        if unknown:
            raise ApiError(
                status_code=400, code="unknown_field", message=f"Unknown parameter(s): {', '.join(sorted(unknown))}."
            )
        return self.acting_key(request, request.query_params.get("api_key")).tenant_id


class InvoiceListView(InvoiceAPIView):
    @extend_schema(
        operation_id="invoices_list",
        parameters=[_API_KEY_PARAM],
        responses={200: OpenApiTypes.OBJECT, **_ERRORS},
        summary="The caller's tenant's invoices, newest period first (drafts included, unnumbered).",
    )
    def get(self, request: Request) -> Response:
        invoices = selectors.invoices_for_tenant(tenant_id=self.tenant_id(request))
        return Response({"results": [invoice_summary(invoice) for invoice in invoices]})


class InvoiceDetailView(InvoiceAPIView):
    rendition = "json"

    @extend_schema(
        operation_id="invoices_retrieve",
        parameters=[_API_KEY_PARAM],
        responses={200: OpenApiTypes.OBJECT, **_ERRORS},
        summary="One invoice with its lines (.csv and .pdf give the same invoice as a file).",
    )
    def get(self, request: Request, pk: int) -> Response | HttpResponse:
        invoice = selectors.invoice_for_tenant(tenant_id=self.tenant_id(request), invoice_id=pk)
        if invoice is None:
            raise ApiError(status_code=404, code="not_found", message="No such invoice.")
        name = invoice.number or f"draft-{invoice.period}-{invoice.pk}"
        if self.rendition == "csv":
            response = HttpResponse(exports.invoice_csv(invoice), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
            return response
        if self.rendition == "pdf":
            response = HttpResponse(pdf.invoice_pdf(invoice), content_type="application/pdf")
            response["Content-Disposition"] = f'inline; filename="{name}.pdf"'
            return response
        return Response(invoice_detail(invoice))


class InvoiceCSVView(InvoiceDetailView):
    rendition = "csv"

    @extend_schema(
        operation_id="invoices_csv",
        parameters=[_API_KEY_PARAM],
        responses={(200, "text/csv"): OpenApiTypes.BINARY, **_ERRORS},
        summary="One invoice's lines and totals as CSV (UTF-8).",
    )
    def get(self, request: Request, pk: int) -> Response | HttpResponse:
        return super().get(request, pk)


class InvoicePDFView(InvoiceDetailView):
    rendition = "pdf"

    @extend_schema(
        operation_id="invoices_pdf",
        parameters=[_API_KEY_PARAM],
        responses={(200, "application/pdf"): OpenApiTypes.BINARY, **_ERRORS},
        summary="One invoice as a PDF in the tenant's language.",
    )
    def get(self, request: Request, pk: int) -> Response | HttpResponse:
        return super().get(request, pk)
