"""Conversations as recorded, feedback on messages, and tags on conversations, messages, users and
workspaces (SQLAlchemy Core).

Feedback: one rating per (message, user) — a second one replaces the first; the operator's ratings
(user NULL) are each kept. Each row carries copies of its message's model, owner and time, so
llm-performance counts ratings per model and period from message_feedback alone.

Tags: unique per (target, name); adding an existing tag returns it unchanged. Who may see or add which
tag is the API's rule (gateway/api/admin/conversations.py); `target_facts` gives it the facts. The value
rules are in annotations/service.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_for
from storage.models import (
    Conversation,
    ConversationLlm,
    Llm,
    Message,
    MessageFeedback,
    Tag,
    UsageLog,
    User,
    Workspace,
    WorkspaceMember,
    table_of,
)
from storage.paging import Page
from storage.types import utcnow

conversations = table_of(Conversation)
conversation_llms = table_of(ConversationLlm)
llms = table_of(Llm)
messages = table_of(Message)
feedback = table_of(MessageFeedback)
tags = table_of(Tag)
usage_logs = table_of(UsageLog)
users = table_of(User)
workspaces = table_of(Workspace)
members = table_of(WorkspaceMember)

T = TypeVar("T")


def _build(cls: type[T], values: Any) -> T:
    """A dataclass from a result row's values, in column order."""
    return cls(*values)


# -- conversations -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    id: uuid.UUID
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    title: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationLlmInfo:
    llm_id: int
    model: str | None
    provider: str | None
    message_count: int
    input_tokens: int
    output_tokens: int
    cost_nano: int
    latency_ms_sum: int
    first_used_at: datetime
    last_used_at: datetime


@dataclass(frozen=True, slots=True)
class MessageUsage:
    status: str
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_nano: int
    charged_nano: int
    latency_ms: int
    ttft_ms: int | None
    byok: bool
    is_stream: bool


@dataclass(frozen=True, slots=True)
class MessageInfo:
    id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    llm_id: int | None
    model: str | None
    role: str
    request_id: str
    prompt: Any
    content: str | None
    finish_reason: str | None
    created_at: datetime
    usage: MessageUsage | None


async def get_conversation(conn: AsyncConnection, conversation_id: uuid.UUID) -> ConversationInfo | None:
    c = conversations.c
    row = (
        await conn.execute(
            select(c.id, c.user_id, c.workspace_id, c.api_key_id, c.title, c.created_at, c.updated_at).where(
                c.id == conversation_id
            )
        )
    ).first()
    return None if row is None else ConversationInfo(*row)


async def conversation_llm_rows(
    conn: AsyncConnection, conversation_id: uuid.UUID
) -> list[ConversationLlmInfo]:
    """The conversation's per-model totals, in the order the models were first used."""
    cl = conversation_llms.c
    stmt = (
        select(
            cl.llm_id,
            llms.c.name,
            llms.c.provider,
            cl.message_count,
            cl.input_tokens,
            cl.output_tokens,
            cl.cost_nano,
            cl.latency_ms_sum,
            cl.first_used_at,
            cl.last_used_at,
        )
        .outerjoin(llms, llms.c.id == cl.llm_id)
        .where(cl.conversation_id == conversation_id)
        .order_by(cl.first_used_at, cl.llm_id)
    )
    return [_build(ConversationLlmInfo, row) for row in (await conn.execute(stmt)).all()]


async def list_messages(
    conn: AsyncConnection, conversation_id: uuid.UUID, *, limit: int, offset: int
) -> Page[MessageInfo]:
    """A conversation's messages, oldest first (ties by id), each with its usage_logs row."""
    m, u = messages.c, usage_logs.c
    total = (
        await conn.execute(
            select(func.count()).select_from(messages).where(m.conversation_id == conversation_id)
        )
    ).scalar_one()
    stmt = (
        select(
            m.id,
            m.conversation_id,
            m.user_id,
            m.llm_id,
            llms.c.name,
            m.role,
            m.request_id,
            m.prompt,
            m.content,
            m.finish_reason,
            m.created_at,
            u.id.label("usage_id"),
            u.status,
            u.input_tokens,
            u.cached_input_tokens,
            u.cache_write_tokens,
            u.output_tokens,
            u.reasoning_tokens,
            u.cost_nano,
            u.charged_nano,
            u.latency_ms,
            u.ttft_ms,
            u.user_api_key_used,
            u.is_stream,
        )
        .outerjoin(llms, llms.c.id == m.llm_id)
        .outerjoin(usage_logs, u.request_id == m.request_id)
        .where(m.conversation_id == conversation_id)
        .order_by(m.created_at, m.id)
        .limit(limit)
        .offset(offset)
    )
    items = []
    for row in (await conn.execute(stmt)).all():
        usage = None
        if row.usage_id is not None:
            usage = MessageUsage(
                status=row.status,
                input_tokens=row.input_tokens,
                cached_input_tokens=row.cached_input_tokens,
                cache_write_tokens=row.cache_write_tokens,
                output_tokens=row.output_tokens,
                reasoning_tokens=row.reasoning_tokens,
                cost_nano=row.cost_nano,
                charged_nano=row.charged_nano,
                latency_ms=row.latency_ms,
                ttft_ms=row.ttft_ms,
                byok=bool(row.user_api_key_used),
                is_stream=bool(row.is_stream),
            )
        items.append(_build(MessageInfo, (*row[:11], usage)))
    return Page(items, int(total), limit, offset)


# -- feedback ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageRef:
    """What feedback needs of a message: whose it is, its model and its time."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    llm_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class FeedbackInfo:
    id: uuid.UUID
    message_id: uuid.UUID
    user_id: uuid.UUID | None
    scale: str
    rating: int
    comment: str | None
    categories: list[str] | None
    created_at: datetime
    sentiment: str | None = None  # of the comment: positive | neutral | negative (None: no comment)
    sentiment_score: Decimal | None = None  # −1 … 1, five places


_FEEDBACK_COLUMNS = (
    feedback.c.id,
    feedback.c.message_id,
    feedback.c.user_id,
    feedback.c.scale,
    feedback.c.rating,
    feedback.c.comment,
    feedback.c.categories,
    feedback.c.created_at,
    feedback.c.sentiment,
    feedback.c.sentiment_score,
)


async def get_message(conn: AsyncConnection, message_id: uuid.UUID) -> MessageRef | None:
    m = messages.c
    stmt = select(m.id, m.conversation_id, m.user_id, m.llm_id, m.created_at).where(m.id == message_id)
    row = (await conn.execute(stmt)).first()
    return None if row is None else MessageRef(*row)


async def save_feedback(
    conn: AsyncConnection,
    message: MessageRef,
    *,
    user_id: uuid.UUID | None,
    scale: str,
    rating: int,
    comment: str | None,
    categories: list[str] | None,
    sentiment: str | None = None,
    sentiment_score: Decimal | None = None,
) -> tuple[FeedbackInfo, bool]:
    """Rate a message; a user's second rating of the same message replaces the first.

    Returns the stored feedback and whether it is new (False: an earlier rating was replaced).
    """
    new_id = uuid.uuid4()
    now = utcnow()
    values = {
        "scale": scale,
        "rating": rating,
        "comment": comment,
        "categories": categories,
        "created_at": now,
        "sentiment": sentiment,
        "sentiment_score": sentiment_score,
    }
    stmt = insert_for(conn, feedback).values(
        id=new_id,
        message_id=message.id,
        user_id=user_id,
        llm_id=message.llm_id,
        message_user_id=message.user_id,
        message_created_at=message.created_at,
        **values,
    )
    stmt = stmt.on_conflict_do_update(index_elements=["message_id", "user_id"], set_=values)
    row = (await conn.execute(stmt.returning(*_FEEDBACK_COLUMNS))).one()
    info = FeedbackInfo(*row)
    return info, info.id == new_id


async def feedback_for_messages(
    conn: AsyncConnection, message_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[FeedbackInfo]]:
    """The feedback of each message, oldest first (ties by id)."""
    if not message_ids:
        return {}
    stmt = (
        select(*_FEEDBACK_COLUMNS)
        .where(feedback.c.message_id.in_(message_ids))
        .order_by(feedback.c.created_at, feedback.c.id)
    )
    out: dict[uuid.UUID, list[FeedbackInfo]] = {}
    for row in (await conn.execute(stmt)).all():
        info = _build(FeedbackInfo, row)
        out.setdefault(info.message_id, []).append(info)
    return out


async def list_feedback(
    conn: AsyncConnection, message_id: uuid.UUID, *, limit: int, offset: int
) -> Page[FeedbackInfo]:
    where = feedback.c.message_id == message_id
    total = (await conn.execute(select(func.count()).select_from(feedback).where(where))).scalar_one()
    stmt = (
        select(*_FEEDBACK_COLUMNS)
        .where(where)
        .order_by(feedback.c.created_at, feedback.c.id)
        .limit(limit)
        .offset(offset)
    )
    return Page(
        [_build(FeedbackInfo, row) for row in (await conn.execute(stmt)).all()], int(total), limit, offset
    )


# -- tags --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TagInfo:
    id: uuid.UUID
    target_type: str
    target_id: uuid.UUID
    name: str
    is_auto: bool
    confidence: Decimal | None
    author_user_id: uuid.UUID | None
    created_at: datetime


_TAG_COLUMNS = (
    tags.c.id,
    tags.c.target_type,
    tags.c.target_id,
    tags.c.name,
    tags.c.is_auto,
    tags.c.confidence,
    tags.c.author_user_id,
    tags.c.created_at,
)


@dataclass(frozen=True, slots=True)
class TargetFacts:
    """Whether a tag target exists and which users it belongs to (a workspace: all its members)."""

    exists: bool
    owners: frozenset[uuid.UUID]


async def target_facts(conn: AsyncConnection, target_type: str, target_id: uuid.UUID) -> TargetFacts:
    if target_type == "workspace":
        if (await conn.execute(select(workspaces.c.id).where(workspaces.c.id == target_id))).first() is None:
            return TargetFacts(False, frozenset())
        found = await conn.execute(select(members.c.user_id).where(members.c.workspace_id == target_id))
        return TargetFacts(True, frozenset(found.scalars().all()))
    if target_type == "user":
        exists = (await conn.execute(select(users.c.id).where(users.c.id == target_id))).first() is not None
        return TargetFacts(exists, frozenset({target_id}) if exists else frozenset())
    table = {"conversation": conversations, "message": messages}[target_type]
    owner = (await conn.execute(select(table.c.user_id).where(table.c.id == target_id))).scalar_one_or_none()
    return TargetFacts(owner is not None, frozenset() if owner is None else frozenset({owner}))


async def add_tag(
    conn: AsyncConnection,
    *,
    target_type: str,
    target_id: uuid.UUID,
    name: str,
    is_auto: bool,
    confidence: Decimal | None,
    author_user_id: uuid.UUID | None,
) -> tuple[TagInfo, bool]:
    """Tag a target; if it carries that tag already, the existing tag is returned (and False)."""
    stmt = insert_for(conn, tags).values(
        id=uuid.uuid4(),
        target_type=target_type,
        target_id=target_id,
        name=name,
        is_auto=is_auto,
        confidence=confidence,
        author_user_id=author_user_id,
        created_at=utcnow(),
    )
    stmt = stmt.on_conflict_do_nothing(index_elements=["target_type", "target_id", "name"])
    row = (await conn.execute(stmt.returning(*_TAG_COLUMNS))).first()
    if row is not None:
        return TagInfo(*row), True
    existing = (
        await conn.execute(
            select(*_TAG_COLUMNS).where(
                tags.c.target_type == target_type, tags.c.target_id == target_id, tags.c.name == name
            )
        )
    ).one()
    return TagInfo(*existing), False


async def list_tags(
    conn: AsyncConnection, target_type: str, target_id: uuid.UUID, *, limit: int, offset: int
) -> Page[TagInfo]:
    """A target's tags, oldest first (ties by id)."""
    where = (tags.c.target_type == target_type, tags.c.target_id == target_id)
    total = (await conn.execute(select(func.count()).select_from(tags).where(*where))).scalar_one()
    stmt = (
        select(*_TAG_COLUMNS).where(*where).order_by(tags.c.created_at, tags.c.id).limit(limit).offset(offset)
    )
    return Page([TagInfo(*row) for row in (await conn.execute(stmt)).all()], int(total), limit, offset)


async def get_tag(conn: AsyncConnection, tag_id: uuid.UUID) -> TagInfo | None:
    row = (await conn.execute(select(*_TAG_COLUMNS).where(tags.c.id == tag_id))).first()
    return None if row is None else TagInfo(*row)


async def delete_tag(conn: AsyncConnection, tag_id: uuid.UUID) -> bool:
    result = await conn.execute(delete(tags).where(tags.c.id == tag_id))
    return bool(result.rowcount)
