"""Django's Redis cache on a Redis Cluster (CACHES when REDIS_CLUSTER=1).

Django's RedisCache speaks to one server; this keeps its serializer and key handling and only
swaps the client for one `RedisCluster` per process, and the two commands that would cross
slots (MGET, MSET of unrelated keys) for their per-slot forms. Cache keys carry no hash tag:
each one lands on its own slot, which is what spreads them over the cluster.
"""

from collections.abc import Mapping
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

from infra.redis_client import RedisClient, connect


class RedisClusterCacheClient(RedisCacheClient):
    # Set by Django's client (its stubs do not declare them).
    _servers: list[str]
    _pool_options: dict[str, Any]
    _serializer: Any

    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self._cluster: RedisClient | None = None

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        if self._cluster is None:
            options = {k: v for k, v in self._pool_options.items() if k != "parser_class"}
            self._cluster = connect(self._servers[0], cluster=True, **options)
        return self._cluster

    def get_many(self, keys: Any) -> dict[Any, Any]:
        keys = list(keys)
        values = self.get_client(None).mget_nonatomic(keys)
        return {k: self._serializer.loads(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def set_many(self, data: Mapping[Any, Any], timeout: Any) -> None:
        if timeout == 0:  # Django's meaning: expired at once
            self.delete_many(list(data))
            return
        pipeline = self.get_client(None, write=True).pipeline()
        for key, value in data.items():
            pipeline.set(key, self._serializer.dumps(value), ex=timeout)
        pipeline.execute()


class RedisClusterCache(RedisCache):
    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = RedisClusterCacheClient
