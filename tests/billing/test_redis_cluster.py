"""Redis Cluster: the portal's Redis work on a real three-master cluster (tests/redis_cluster.py).

Every test of tests/billing and tests/metering that takes `backend` or `redis_backend` runs on
the cluster too (the `[redis-cluster]` cases: holds, quotas, rate limits, settlement, the 50-
thread concurrency runs with FLUSHDB, the reconciler). The tests here cover what only a cluster
has: slots, several nodes, a slot map read at connection, and the settings that select it.
"""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.db import connections
from rest_framework.test import APIClient

from billing.services.balances import balance_backend
from billing.services.balances.keys import balance_key, cell_index_key, cell_key, hold_key
from billing.services.balances.limits import KEY_SCOPE, PARALLEL, REQUESTS, TENANT_SCOPE, TOKENS, limit_name
from billing.services.reconcile import balances_reconcile
from billing.windows import DAY, LIFETIME, MONTH, Cell
from billing.windows import TENANT_SCOPE as CELL_TENANT
from infra.cluster_cache import RedisClusterCache
from infra.notifications.ratelimit import acquire
from infra.redis_client import connect, same_slot
from tests import factories
from tests.assertions import METRICS_TOKEN

ROOT = Path(__file__).resolve().parents[2]
GPT4O = {"model": "gpt-4o", "estimated_input_tokens": 1000, "max_output_tokens": 500}


def tenant_keys(tenant_id: int) -> list[str]:
    """Every key one tenant's scripts may touch together."""
    day = dt.date(2026, 12, 7)
    cells = [Cell(CELL_TENANT, DAY, day), Cell(CELL_TENANT, MONTH, day.replace(day=1)), Cell(7, LIFETIME, day)]
    scopes, kinds = (KEY_SCOPE, TENANT_SCOPE), (REQUESTS, TOKENS, PARALLEL)
    limits = [limit_name(tenant_id, 7, scope, kind) for scope in scopes for kind in kinds]
    return [
        balance_key(tenant_id),
        hold_key(tenant_id, "req-1"),
        hold_key(tenant_id, "{other}:x"),  # a hostile request_id with braces keeps the tenant's tag first
        cell_index_key(tenant_id),
        *(cell_key(tenant_id, cell) for cell in cells),
        *limits,
    ]


@pytest.mark.parametrize("tenant_id", [1, 42, 9_999_999_999])
def test_one_tenants_keys_share_one_slot(tenant_id):
    assert same_slot(*tenant_keys(tenant_id))


def test_tenants_spread_over_the_masters(redis_cluster):
    client = connect(redis_cluster.url, cluster=True)
    try:
        owners = {client.get_node_from_key(balance_key(tenant_id)).port for tenant_id in range(1, 31)}
    finally:
        client.close()
    assert owners == set(redis_cluster.ports)  # 30 tenants land on all three masters


def test_the_cluster_refuses_a_script_across_tenants(redis_cluster):
    """The rule the hash tags keep: one script, one slot (otherwise CROSSSLOT)."""
    client = connect(redis_cluster.url, cluster=True)
    try:
        script = client.register_script("return redis.call('GET', KEYS[1])")
        assert not same_slot(balance_key(1), balance_key(2))
        with pytest.raises(Exception, match=r"same key slot|CROSSSLOT"):
            script(keys=[balance_key(1), balance_key(2)])
    finally:
        client.close()


@pytest.mark.django_db(transaction=True)
def test_scripts_are_loaded_again_after_script_flush(redis_backend, redis_client, key_a, tenant_a):
    """EVALSHA answers NOSCRIPT on a restarted or flushed node: the script is loaded and run."""
    factories.topup(tenant_a, "10.00")
    assert key_a.post("/api/v1/authorize", {**GPT4O, "hold": True, "request_id": "a"}).status_code == 200
    redis_client.script_flush()  # every master of a cluster
    answer = key_a.post("/api/v1/authorize", {**GPT4O, "hold": True, "request_id": "b"})
    assert answer.status_code == 200, answer.content
    assert int(redis_client.get(balance_key(tenant_a.pk))) == 10_000_000 - 2 * 7500


@pytest.mark.django_db
def test_a_cluster_that_is_down_answers_503_not_500(settings, tenant_a, key_a):
    """The cluster client reads the slot map when it connects; no node answering is a store
    failure like any other (503 balance_unavailable), and the next request tries again."""
    factories.topup(tenant_a, "10.00")
    settings.BALANCE_BACKEND = "redis"
    settings.REDIS_CLUSTER = True
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.BALANCE_REDIS_TIMEOUT = 0.2
    settings.INGEST_CEILING_PER_MINUTE = 0
    answer = key_a.post("/api/v1/authorize", GPT4O)
    assert answer.status_code == 503, answer.content
    assert answer.json()["error"]["code"] == "balance_unavailable"


@pytest.mark.django_db
def test_readyz_on_the_cluster(anonymous, settings, redis_cluster):
    settings.REDIS_CLUSTER = True
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.REDIS_URL = redis_cluster.url
    up = anonymous.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    down = anonymous.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert up.json()["checks"]["redis"] == "ok"
    assert down.status_code == 503
    assert down.json()["checks"]["redis"] == "error: RedisClusterException"


@pytest.mark.django_db(transaction=True)
def test_reconciler_walks_a_tenant_on_each_master(redis_backend, redis_client, plan):
    """Drift is found and fixed whichever master holds the tenant (the reconciler's pipeline
    and SMEMBERS stay on the tenant's slot)."""
    tenants = [factories.TenantFactory(slug=f"t{i}", price_plan=plan) for i in range(8)]
    for tenant in tenants:
        factories.topup(tenant, "1.00")
        _, secret = factories.issue_api_key(tenant)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        assert client.post("/api/v1/authorize", GPT4O, format="json").status_code == 200
        redis_client.set(balance_key(tenant.pk), 5)  # drifted
    report = balances_reconcile(fix=True)
    assert len(report.drifts) == len(tenants)
    assert all(int(redis_client.get(balance_key(t.pk))) == 1_000_000 for t in tenants)
    assert balances_reconcile(fix=False).clean
    connections.close_all()


def test_send_limits_share_one_window_on_the_cluster(settings, redis_cluster):
    settings.REDIS_URL = redis_cluster.url
    settings.REDIS_CLUSTER = True
    waits = [acquire("dingtalk:robot-cluster-test", limit=2, window_seconds=60) for _ in range(3)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] > 0


def test_django_cache_on_the_cluster(redis_cluster):
    cache = RedisClusterCache(redis_cluster.url, {"KEY_PREFIX": "cluster-test"})
    cache.clear()
    data = {f"k{i}": i for i in range(40)}  # 40 keys without a hash tag: spread over the masters
    cache.set_many(data, timeout=DEFAULT_TIMEOUT)
    assert cache.get_many(list(data)) == data
    assert cache.add("k1", 99) is False
    assert cache.add("new", 1, timeout=60) is True
    assert cache.incr("new", 5) == 6
    cache.delete_many(["k1", "k2"])
    assert cache.get("k1") is None
    assert cache.get("k3") == 3
    cache.set_many({"k3": 1}, timeout=0)  # expired at once
    assert cache.get("k3") is None
    cache.clear()
    assert cache.get("k4") is None


def settings_error(**environment: str) -> str:
    """The start-up error of portal.settings under this environment, or "loaded: <cache backend>"."""
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "REDIS_CLUSTER")}
    env |= {"DEBUG": "0", "SECRET_KEY": "k" * 50, "DATABASE_URL": "sqlite://:memory:", **environment}
    code = (
        "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default']['BACKEND'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 0:
        return "loaded: " + done.stdout.strip().splitlines()[-1]
    return done.stderr.strip().splitlines()[-1]


def test_settings_select_the_cluster_and_refuse_what_it_cannot_do():
    cluster = {"REDIS_CLUSTER": "1", "REDIS_URL": "redis://10.0.0.1:7000/0"}
    assert settings_error(**cluster, CELERY_BROKER_URL="redis://10.0.0.2:6379/0") == (
        "loaded: infra.cluster_cache.RedisClusterCache"
    )
    assert "Celery cannot use a Redis Cluster as its broker" in settings_error(**cluster)
    assert "database 0" in settings_error(
        REDIS_CLUSTER="1", REDIS_URL="redis://10.0.0.1:7000/9", CELERY_BROKER_URL="amqp://mq"
    )
    assert "needs REDIS_URL" in settings_error(REDIS_CLUSTER="1", REDIS_URL="")
    assert settings_error(REDIS_URL="redis://10.0.0.1:6379/3") == "loaded: django.core.cache.backends.redis.RedisCache"


def test_the_balance_backend_follows_the_setting(settings, redis_cluster):
    settings.BALANCE_BACKEND = "redis"
    settings.REDIS_URL = redis_cluster.url
    settings.REDIS_CLUSTER = True
    assert type(balance_backend().client).__name__ == "RedisCluster"
    settings.REDIS_CLUSTER = False
    settings.REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    assert type(balance_backend().client).__name__ == "Redis"


# --- The operators' view of the stores (the jobs page) -----------------------------------------


def _stores_card(client, user) -> str:
    client.force_login(user)
    page = client.get("/ops/jobs/")
    assert page.status_code == 200
    html = page.content.decode()
    return html[html.index('id="data-stores"') : html.index("</section>", html.index('id="data-stores"'))]


def test_operators_see_one_redis_and_no_replica(client, operator, settings):
    settings.BALANCE_BACKEND = "redis"
    card = _stores_card(client, operator)
    assert "Redis, one server: answering" in card
    assert "none: dashboards and reports read the primary" in card


def test_operators_see_the_cluster_and_when_it_is_down(client, operator, settings, redis_cluster):
    settings.BALANCE_BACKEND = "redis"
    settings.REDIS_CLUSTER = True
    settings.REDIS_URL = redis_cluster.url
    assert "Redis Cluster, 3 masters: ok" in _stores_card(client, operator)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert "Redis unreachable (RedisClusterException)" in _stores_card(client, operator)


def test_operators_see_the_database_balance_store(client, operator, settings):
    settings.BALANCE_BACKEND = "db"
    assert "the database (no Redis)" in _stores_card(client, operator)
