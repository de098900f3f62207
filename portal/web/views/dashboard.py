"""The tenant's dashboard: usage and money at a glance, from the daily rollups (read from the
replica when one is configured: infra/db_routing.py)."""

from django.http import HttpRequest, HttpResponse

from infra.db_routing import on_replica
from portal.web.access import PortalContext, portal_view
from portal.web.dashboard import dashboard_build
from portal.web.ranges import PRESETS, range_from_query
from portal.web.views.common import page


@portal_view("usage.view")
@on_replica  # rollups and the wallet as shown may lag the primary by the replica's delay
def dashboard(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    assert portal.tenant is not None
    day_range, range_error = range_from_query(request.GET, portal.tenant.timezone)
    board = dashboard_build(tenant=portal.tenant, day_range=day_range)
    return page(
        request,
        "portal/dashboard.html",
        {"board": board, "day_range": day_range, "range_error": range_error, "presets": PRESETS},
    )
