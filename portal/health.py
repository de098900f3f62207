"""Liveness and readiness probes for load balancers and orchestrators."""

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


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
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
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
            checks[name] = f"error: {type(exc).__name__}: {exc}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
