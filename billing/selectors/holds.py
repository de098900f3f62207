"""Open holds: what authorizations reserve until their usage arrives or they expire."""

from decimal import Decimal

from django.db.models import Count, Sum

from billing.models import Hold


def open_holds(*, tenant_id: int, limit: int = 100) -> list[Hold]:
    """The tenant's open holds, oldest first (at most `limit`)."""
    return list(Hold.objects.filter(tenant_id=tenant_id, status=Hold.Status.OPEN).order_by("created_at", "id")[:limit])


def open_holds_total(*, tenant_id: int) -> tuple[int, Decimal]:
    row = Hold.objects.filter(tenant_id=tenant_id, status=Hold.Status.OPEN).aggregate(
        n=Count("id"), total=Sum("amount")
    )
    return row["n"], row["total"] or Decimal(0)


def hold_by_request(*, tenant_id: int, request_id: str) -> Hold | None:
    return Hold.objects.filter(tenant_id=tenant_id, request_id=request_id).first()
