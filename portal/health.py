"""Liveness and readiness probes for load balancers and orchestrators, and /metrics.

/healthz and /readyz answer anyone (a load balancer has no credential), but /readyz tells an
anonymous caller only "ok" or "unavailable"; the per-check results, and /metrics, are for
observers: a caller presenting METRICS_TOKEN or calling from METRICS_ALLOWED_NETWORKS. No
answer names a host, a port or a database: failures are logged here, in full, instead.
"""

import functools
import hmac
import ipaddress
import logging
import os

import prometheus_client
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView
from prometheus_client import multiprocess

from accounts.client_ip import client_address
from infra.redis_client import connect
from infra.scrape import SCRAPE_COLLECTORS

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr.strip()) for cidr in cidrs)


def _token_presented(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return False
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def observer_allowed(request: HttpRequest) -> bool:
    """May this caller read metrics and readiness details? Token, allow-listed address, or DEBUG
    with neither configured (the embedded default)."""
    if _token_presented(request):
        return True
    cidrs = tuple(settings.METRICS_ALLOWED_NETWORKS)
    if cidrs:
        address = client_address(request)
        if address is not None and any(address in network for network in _networks(cidrs)):
            return True
    return bool(settings.DEBUG and not settings.METRICS_TOKEN and not cidrs)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """django-prometheus' exporter, for observers only (platform-wide counts)."""
    if not observer_allowed(request):
        return HttpResponseForbidden("Forbidden\n", content_type="text/plain")
    if SCRAPE_COLLECTORS and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Multiprocess mode reads the workers' files; gauges computed at scrape time join them.
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        for collector in SCRAPE_COLLECTORS:
            registry.register(collector)
        return HttpResponse(
            prometheus_client.generate_latest(registry), content_type=prometheus_client.CONTENT_TYPE_LATEST
        )
    return ExportToDjangoView(request)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up. Touches nothing else, so a slow database never restarts web nodes."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_redis() -> str:
    client = connect(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database answers and, when configured, Redis does too."""
    checks: dict[str, str] = {}
    probes = {"database": _check_database}
    if settings.REDIS_URL:
        probes["redis"] = _check_redis
    for name, probe in probes.items():
        try:
            checks[name] = probe()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
            # The exception's text names hosts and ports: the log has it, the answer does not.
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            checks[name] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    body: dict[str, object] = {"status": "ok" if ready else "unavailable"}
    if observer_allowed(request):
        body["checks"] = checks
    return JsonResponse(body, status=200 if ready else 503)
