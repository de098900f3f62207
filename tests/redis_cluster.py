"""A real Redis Cluster for the suite: three masters on loopback, started once per session.

`redis_cluster` starts a private three-master cluster (bench/rediscluster.py: free loopback
ports, a temporary folder, no persistence), waits until every node reports `cluster_state:ok`,
and stops it at the end of the session. Without redis-server or redis-cli installed the tests
that need it skip, saying why (`make test` installs them: debian-packages.txt).
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from rediscluster import RedisClusterProcesses, cluster_missing_reason  # bench/ is not a package


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    reason = cluster_missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
