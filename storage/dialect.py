"""Dialect-specific statements: one place that knows PostgreSQL's and SQLite's upsert differ."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")


def insert_for(conn: AsyncConnection, table: Table) -> Any:
    """An INSERT with `.on_conflict_do_update/…_nothing` for the connection's dialect."""
    return dialect_insert(conn.dialect.name, table)


def built_once(build: Callable[[str], T]) -> Callable[[AsyncConnection], T]:
    """Statements built once per dialect, not per call: building a Core upsert (its `excluded` alias
    proxies every column) costs more than executing it on the hot path."""
    cached = cache(build)

    def for_connection(conn: AsyncConnection) -> T:
        return cached(conn.dialect.name)

    return for_connection


def dialect_insert(dialect: str, table: Table) -> Any:
    """`insert_for`, by dialect name (for statements built once)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
