"""The dashboard's session stores, each on its own backend: Redis strings (with Redis) and the
`dashboard_sessions` table (the embedded default). The browser suite signs in on both but signs out on
PostgreSQL + Redis only; this checks each store's contract directly: a session reads back as created, a
deleted or expired one is gone, and only the token's digest is stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text, update

from gateway.dashboard import data as dashboard_data
from gateway.dashboard import sessions as sessions_module
from gateway.dashboard.sessions import RedisSessionStore, SqlSessionStore
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.db import create_engine

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sql-sqlite", "sql-postgres", "redis"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> Any:
    kind = str(request.param)
    engine = create_engine(
        request.getfixturevalue("sqlite_reset_database" if kind == "sql-sqlite" else "pg_reset_database")
    )
    redis = Redis.from_url(redis_url)
    try:
        yield (RedisSessionStore(redis) if kind == "redis" else SqlSessionStore(engine)), engine, redis
    finally:
        await redis.aclose()
        await engine.dispose()


async def test_a_session_reads_back_then_is_gone_when_deleted(store: Any) -> None:
    sessions, engine, redis = store
    async with engine.begin() as conn:  # the SQL store's columns are foreign keys: real rows
        created_user = await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")
        user, workspace = created_user.user_id, created_user.workspace_id
        key, _ = await create_key(conn, user, workspace_id=workspace)
    token, created = await sessions.create(user, workspace, key)
    read = await sessions.get(token)
    assert read is not None
    assert (read.user_id, read.workspace_id, read.api_key_id) == (user, workspace, key)
    assert read.csrf_token == created.csrf_token and read.csrf_token != token
    assert abs((read.expires_at - created.expires_at).total_seconds()) < 1
    assert await sessions.get(token + "x") is None
    # the token itself is never stored: only its digest is
    if isinstance(sessions, RedisSessionStore):
        stored = [k.decode() async for k in redis.scan_iter(match="*")]
    else:
        async with engine.connect() as conn:
            stored = [str(r[0]) for r in await conn.execute(text("SELECT id_hash FROM dashboard_sessions"))]
    assert stored and not any(token in s for s in stored)
    await sessions.delete(token)
    assert await sessions.get(token) is None


async def test_an_admin_session_has_no_user_and_an_expired_one_is_gone(store: Any) -> None:
    sessions, engine, redis = store
    token, _ = await sessions.create(None, None, None)
    read = await sessions.get(token)
    assert read is not None and (read.user_id, read.workspace_id, read.api_key_id) == (None, None, None)
    if isinstance(sessions, RedisSessionStore):  # Redis expires the string itself
        keys = [k async for k in redis.scan_iter(match="*")]
        assert len(keys) == 1 and 0 < await redis.ttl(keys[0]) <= sessions_module.SESSION_TTL.total_seconds()
        await redis.pexpire(keys[0], 1)
        await _wait_gone(redis, keys[0])
    else:
        past = datetime.now(UTC) - timedelta(seconds=1)
        async with engine.begin() as conn:
            await conn.execute(update(dashboard_data.sessions).values(expires_at=past))
    assert await sessions.get(token) is None


async def _wait_gone(redis: Redis, key: Any) -> None:
    import asyncio

    for _ in range(100):
        if not await redis.exists(key):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the session did not expire")
