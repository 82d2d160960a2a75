"""`build_ledger`: the one place that chooses the credit ledger from the settings (app, CLI and tests)."""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from storage.billing.ledger.base import CreditLedger
from storage.billing.ledger.redis import RedisLedger
from storage.billing.ledger.sql import SqlLedger
from storage.redis_connection import redis_from_url


def build_ledger(settings: Settings, engine: AsyncEngine, redis: Redis | None) -> CreditLedger:
    """The Redis ledger when a Redis client is given (SYNAPGATE_REDIS_URL), else the database's own."""
    if redis is not None:
        return RedisLedger(
            redis, engine, settings.reservation_ttl_seconds, settings.reservation_lease_seconds
        )
    return SqlLedger(engine, settings.reservation_ttl_seconds, settings.reservation_lease_seconds)


def redis_for(settings: Settings) -> Redis | None:
    """The Redis client of the settings (None without SYNAPGATE_REDIS_URL); the caller closes it."""
    return redis_from_url(settings.redis_url) if settings.redis_url else None
