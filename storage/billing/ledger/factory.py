"""`build_ledger`: the one place that chooses the credit ledger from the settings (app, CLI and tests)."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from storage.billing.ledger.base import CreditLedger
from storage.billing.ledger.redis import RedisClient, RedisLedger
from storage.billing.ledger.sql import SqlLedger
from storage.redis_connection import redis_cluster_from_url, redis_from_url


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
    """PING the Redis of the settings: on a cluster every primary, so each slot's node must answer (redis-py
    pings only its default node by default). Raises when one does not (readiness, the outage probe)."""
    if isinstance(redis, RedisCluster):
        return bool(await redis.ping(target_nodes=RedisCluster.PRIMARIES))
    return bool(await redis.ping())
