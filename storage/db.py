"""Database engines for PostgreSQL (asyncpg) and the embedded SQLite default (aiosqlite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_engine(url: str, *, pool_size: int = 20, null_pool: bool = False) -> AsyncEngine:
    """An async engine for `url`. SQLite gets foreign keys on, WAL, and a single connection.

    One SQLite connection serialises this process's writes, which is what SQLite does anyway; with
    several connections concurrent transactions would fail with "database is locked" instead of queueing.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if null_pool:
        return create_async_engine(url, poolclass=NullPool)
    # A fixed pool: overflow connections would be opened and closed again under every burst.
    return create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_pre_ping=False)
