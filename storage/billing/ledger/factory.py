"""`build_ledger`: the one place that chooses the credit ledger from the settings (app, CLI and tests)."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from storage.billing.ledger.base import CreditLedger
from storage.billing.ledger.redis import RedisClient, RedisLedger
from storage.billing.ledger.sql import SqlLedger
from storage.redis_connection import redis_cluster_from_url, redis_from_url

REDIS_CLUSTER_SLOTS = 16384


def build_ledger(settings: Settings, engine: AsyncEngine, redis: RedisClient | None) -> CreditLedger:
    """The Redis ledger when a Redis client is given (SYNAPGATE_REDIS_URL), else the database's own."""
    if redis is not None:
        return RedisLedger(
            redis, engine, settings.reservation_ttl_seconds, settings.reservation_lease_seconds
        )
    return SqlLedger(engine, settings.reservation_ttl_seconds, settings.reservation_lease_seconds)


def redis_for(settings: Settings) -> RedisClient | None:
    """The Redis client of the settings (None without SYNAPGATE_REDIS_URL); the caller closes it. With
    SYNAPGATE_REDIS_CLUSTER a cluster client: it learns the nodes from the one in the URL, routes each key to
    its slot's primary, and follows the cluster when slots move."""
    if not settings.redis_url:
        return None
    if settings.redis_cluster:
        return redis_cluster_from_url(settings.redis_url)
    return redis_from_url(settings.redis_url)


async def ping_redis(redis: RedisClient) -> bool:
    """PING the Redis of the settings: on a cluster every primary the cluster itself says owns slots, so each
    slot's node must answer (redis-py pings only its default node by default). Raises when one does not
    (readiness, the outage probe)."""
    if isinstance(redis, RedisCluster):
        return await _ping_every_slot_owner(redis)
    return bool(await redis.ping())


async def _ping_every_slot_owner(redis: RedisCluster) -> bool:
    """The owners come from CLUSTER SLOTS asked now, not from the client's node cache: while the client
    rebuilds that cache after a node failed (a request to it did), its primaries may lack the dead node, and
    a ping of "every primary" then answered for a cluster with a node down (seen in
    tests/integration/test_redis_cluster.py). A slot range with no owner is an outage too."""
    # {(first slot, last slot): {"primary": (host, port), ...}}: RedisCluster's result callback parses it (its
    # stubs say list)
    slots = cast("dict[tuple[int, int], dict[str, Any]]", await redis.cluster_slots())
    if sum(end - start + 1 for start, end in slots) < REDIS_CLUSTER_SLOTS:
        raise RedisConnectionError("the Redis Cluster does not serve every slot")
    owners = sorted({(str(v["primary"][0]), int(v["primary"][1])) for v in slots.values()})
    nodes = [redis.get_node(host=host, port=port) for host, port in owners]
    unknown = [f"{host}:{port}" for (host, port), node in zip(owners, nodes, strict=True) if node is None]
    if unknown:
        raise RedisConnectionError(f"Redis Cluster primaries the client has no connection to: {unknown}")
    return bool(await redis.ping(target_nodes=[node for node in nodes if node is not None]))
