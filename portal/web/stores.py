"""Where the hot counters live and where dashboards read, as the operators' jobs page shows it.

Read on each load of that page (operators only): the balance store (the database, one Redis
or a Redis Cluster, and whether it answers) and the read replica (none, or how far its replay
is behind the primary). docs/deploy.md, "Read replica" and "Redis Cluster".
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils.translation import gettext as _

from infra.db_routing import REPLICA, replica_configured
from infra.redis_client import REDIS_FAILURES, connect


@dataclass(frozen=True)
class StoreStatus:
    name: str
    state: str
    healthy: bool


def _balance_store() -> StoreStatus:
    if settings.BALANCE_BACKEND != "redis":
        return StoreStatus(_("Balance store"), _("the database (no Redis)"), True)
    client = None
    try:
        # a cluster client reads the slot map here, so it may fail already
        client = connect(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
        if not settings.REDIS_CLUSTER:
            client.ping()
            return StoreStatus(_("Balance store"), _("Redis, one server: answering"), True)
        info = client.execute_command("CLUSTER INFO")
        masters = int(info.get("cluster_size", 0))
        ok = info.get("cluster_state") == "ok"
        state = _("Redis Cluster, %(masters)d masters: %(state)s") % {
            "masters": masters,
            "state": info.get("cluster_state", "?"),
        }
        return StoreStatus(_("Balance store"), state, ok)
    except REDIS_FAILURES as exc:
        state = _("Redis unreachable (%(error)s)") % {"error": type(exc).__name__}
        return StoreStatus(_("Balance store"), state, False)
    finally:
        if client is not None:
            client.close()


def _replica() -> StoreStatus:
    if not replica_configured():
        return StoreStatus(_("Read replica"), _("none: dashboards and reports read the primary"), True)
    try:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(
                "SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),"
                " EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())"
            )
            caught_up, seconds = cursor.fetchone()
    except DatabaseError as exc:
        return StoreStatus(_("Read replica"), _("unreachable (%(error)s)") % {"error": type(exc).__name__}, False)
    if caught_up:
        return StoreStatus(_("Read replica"), _("streaming, replay up to date"), True)
    lag = _("replay %(seconds).1f s behind") % {"seconds": float(seconds or 0)}
    return StoreStatus(_("Read replica"), lag, float(seconds or 0) < 60)


def stores_status() -> list[StoreStatus]:
    return [_balance_store(), _replica()]
