"""Dashboard sessions: a random id in an HttpOnly cookie; the server keeps the caller's scope, never a key.

Stored in Redis when the gateway has one, else in the `dashboard_sessions` table, so every worker process
sees every session. Only the SHA-256 of the session id is stored: a copy of the store cannot be turned
back into cookies. Each session carries its own CSRF token (a synchroniser token for the forms it posts).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.dashboard import data
from storage.billing.ledger.redis import RedisClient

SESSION_COOKIE = "sg_session"
LOGIN_CSRF_COOKIE = "sg_login_csrf"
SESSION_TTL = timedelta(hours=12)
_REDIS_PREFIX = "synapgate:dashboard:session:"


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: the operator (`user_id` None) or one user, with its CSRF token."""

    user_id: uuid.UUID | None
    workspace_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    csrf_token: str
    expires_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.user_id is None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore(Protocol):
    async def create(
        self, user_id: uuid.UUID | None, workspace_id: uuid.UUID | None, api_key_id: uuid.UUID | None
    ) -> tuple[str, Session]: ...
    async def get(self, session_id: str) -> Session | None: ...
    async def delete(self, session_id: str) -> None: ...


def _new_session(
    user_id: uuid.UUID | None, workspace_id: uuid.UUID | None, api_key_id: uuid.UUID | None
) -> tuple[str, Session]:
    expires = datetime.now(UTC) + SESSION_TTL
    return new_token(), Session(user_id, workspace_id, api_key_id, new_token(), expires)


class RedisSessionStore:
    """Sessions as Redis strings that expire on their own."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def create(
        self, user_id: uuid.UUID | None, workspace_id: uuid.UUID | None, api_key_id: uuid.UUID | None
    ) -> tuple[str, Session]:
        session_id, session = _new_session(user_id, workspace_id, api_key_id)
        body = {
            "user_id": str(user_id) if user_id else None,
            "workspace_id": str(workspace_id) if workspace_id else None,
            "api_key_id": str(api_key_id) if api_key_id else None,
            "csrf_token": session.csrf_token,
            "expires_at": session.expires_at.isoformat(),
        }
        ttl = int(SESSION_TTL.total_seconds())
        await self._redis.set(_REDIS_PREFIX + _digest(session_id), json.dumps(body), ex=ttl)
        return session_id, session

    async def get(self, session_id: str) -> Session | None:
        raw = await self._redis.get(_REDIS_PREFIX + _digest(session_id))
        if raw is None:
            return None
        body = json.loads(raw)

        def uid(name: str) -> uuid.UUID | None:
            return uuid.UUID(body[name]) if body.get(name) else None

        return Session(
            uid("user_id"),
            uid("workspace_id"),
            uid("api_key_id"),
            str(body["csrf_token"]),
            datetime.fromisoformat(body["expires_at"]),
        )

    async def delete(self, session_id: str) -> None:
        await self._redis.delete(_REDIS_PREFIX + _digest(session_id))


class SqlSessionStore:
    """Sessions in the `dashboard_sessions` table (the embedded default, and PostgreSQL without Redis)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self, user_id: uuid.UUID | None, workspace_id: uuid.UUID | None, api_key_id: uuid.UUID | None
    ) -> tuple[str, Session]:
        session_id, session = _new_session(user_id, workspace_id, api_key_id)
        record = data.SessionRecord(user_id, workspace_id, api_key_id, session.csrf_token, session.expires_at)
        async with self._engine.begin() as conn:
            await data.session_insert(conn, _digest(session_id), record, datetime.now(UTC))
        return session_id, session

    async def get(self, session_id: str) -> Session | None:
        async with self._engine.connect() as conn:
            record = await data.session_get(conn, _digest(session_id), datetime.now(UTC))
        if record is None:
            return None
        return Session(
            record.user_id, record.workspace_id, record.api_key_id, record.csrf_token, record.expires_at
        )

    async def delete(self, session_id: str) -> None:
        async with self._engine.begin() as conn:
            await data.session_delete(conn, _digest(session_id))


def store_for(redis: RedisClient | None, engine: AsyncEngine) -> SessionStore:
    """Redis when the gateway has it (shared by every worker), else the database."""
    return RedisSessionStore(redis) if redis is not None else SqlSessionStore(engine)
