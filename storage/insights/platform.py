"""The platform account of the insights tagger model: a user and a key of its own, so the tagger's requests
go through the chat service — admission, reservation, record, ledger — like any client's, and their cost
shows in usage and analytics under that user. Created on first use; topped up with credits like any user
(without credit the tagger's requests are refused with 402 and the offline models are used)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.accounts.keys import KeyPrincipal, create_key, principal_for_key_id
from storage.accounts.users import create_user, default_workspace
from storage.errors import DuplicateEmail
from storage.models import ApiKey, MessageFeedback, User, table_of

TAGGER_KEY_NAME = "insights-tagger"
SCORE_PLACES = Decimal("0.00001")

_users = table_of(User)
_keys = table_of(ApiKey)
_feedback = table_of(MessageFeedback)


async def _user_id(conn: AsyncConnection, email: str) -> uuid.UUID | None:
    found: uuid.UUID | None = (
        await conn.execute(select(_users.c.id).where(_users.c.email == email))
    ).scalar()
    return found


async def platform_principal(engine: AsyncEngine, email: str) -> KeyPrincipal | None:
    """The principal of the platform user's tagger key, the user and the key created when missing; None when
    the user or the key was disabled by an operator (the tagger then stays offline)."""
    async with engine.begin() as conn:
        user_id = await _user_id(conn, email)
        if user_id is None:
            try:
                user_id = (await create_user(conn, email, name="SynapGate insights tagger")).user_id
            except DuplicateEmail:  # another instance created it just now (the savepoint rolled back)
                user_id = await _user_id(conn, email)
                if user_id is None:
                    return None
        key_id = (
            await conn.execute(
                select(_keys.c.id)
                .where(_keys.c.user_id == user_id, _keys.c.name == TAGGER_KEY_NAME)
                .order_by(_keys.c.created_at, _keys.c.id)
                .limit(1)
            )
        ).scalar()
        if key_id is None:
            workspace_id = await default_workspace(conn, user_id)
            key_id, _plaintext = await create_key(
                conn, user_id, workspace_id=workspace_id, name=TAGGER_KEY_NAME
            )  # the plaintext is dropped: the tagger uses the key by id
        return await principal_for_key_id(conn, key_id)


async def set_feedback_sentiment(
    conn: AsyncConnection, feedback_id: uuid.UUID, label: str, score: float
) -> bool:
    """Replace a feedback comment's sentiment with the tagger model's; False when the feedback is gone."""
    result = await conn.execute(
        update(_feedback)
        .where(_feedback.c.id == feedback_id)
        .values(sentiment=label, sentiment_score=Decimal(str(score)).quantize(SCORE_PLACES))
    )
    return bool(result.rowcount)
