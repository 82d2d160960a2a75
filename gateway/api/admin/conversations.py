"""Admin API: conversations (with their messages and per-model totals), feedback on messages, and tags.

Who sees what (anything else is 404, as if it did not exist):
- A conversation, and a message's feedback: the admin key, or the key of the user it belongs to.
- Feedback: a user rates only messages of their own conversations; the admin key any message. A user's
  second rating of a message replaces the first (200 instead of 201); the admin's ratings (no user) are
  each kept.
- Tags: a user tags, lists and sees tags only on their own conversations and messages, on themselves,
  and on workspaces they are a member of; a manual tag's author is the calling user. The admin key tags
  anything; its tags have no author unless `author_user_id` names one, and only it adds automatic tags
  (`is_auto`, with an optional `confidence` 0–1). A user deletes only tags they wrote (another's on a
  target they see: 403); the admin key deletes any.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from litestar import Controller, Response, delete, get, post
from litestar.params import FromPath, JSONBody

from gateway.api.admin.analytics import TokensOut
from gateway.api.admin.common import Body, Struct, money
from gateway.api.admin.scope import Caller, Engine, Paging, not_found
from gateway.chat.tagging import offer_feedback_sentiment, offline_models
from gateway.errors import GatewayError, bad_request
from storage.annotations import repository as store
from storage.annotations import service
from storage.models import TAG_TARGET_TYPES

MAX_TAGS_SHOWN = 1000

# -- response shapes -----------------------------------------------------------------------------


class FeedbackOut(Struct):
    id: uuid.UUID
    message_id: uuid.UUID
    user_id: uuid.UUID | None  # None: given with the admin key
    scale: str  # thumbs (rating -1 or 1) | stars (rating 1–5)
    rating: int
    comment: str | None
    categories: list[str] | None
    created_at: datetime
    sentiment: str | None = None  # of the comment: positive | neutral | negative
    sentiment_score: float | None = None  # −1 … 1


class FeedbackPage(Struct):
    data: list[FeedbackOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class MessageUsageOut(Struct):
    status: str
    tokens: TokensOut
    cost_usd: str
    cost_nano: int
    charged_usd: str
    charged_nano: int
    latency_ms: int
    ttft_ms: int | None
    byok: bool
    stream: bool


class MessageOut(Struct):
    id: uuid.UUID
    role: str
    llm_id: int | None
    model: str | None
    request_id: str
    finish_reason: str | None
    created_at: datetime
    prompt: Any  # kept only when the operator stores message content
    content: str | None
    usage: MessageUsageOut | None
    feedback: list[FeedbackOut]


class MessagePage(Struct):
    data: list[MessageOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class ConversationLlmOut(Struct):
    llm_id: int
    model: str | None
    provider: str | None
    message_count: int
    input_tokens: int
    output_tokens: int
    cost_usd: str
    cost_nano: int
    average_latency_ms: float | None
    first_used_at: datetime
    last_used_at: datetime


class TagOut(Struct):
    id: uuid.UUID
    target_type: str
    target_id: uuid.UUID
    name: str
    is_auto: bool
    confidence: str | None  # exact decimal, 0–1
    author_user_id: uuid.UUID | None
    created_at: datetime


class TagPage(Struct):
    data: list[TagOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class ConversationOut(Struct):
    id: uuid.UUID
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    title: str | None
    created_at: datetime
    updated_at: datetime
    tags: list[TagOut]
    llms: list[ConversationLlmOut]
    messages: MessagePage


def feedback_out(f: store.FeedbackInfo) -> FeedbackOut:
    return FeedbackOut(
        id=f.id,
        message_id=f.message_id,
        user_id=f.user_id,
        scale=f.scale,
        rating=f.rating,
        comment=f.comment,
        categories=f.categories,
        created_at=f.created_at,
        sentiment=f.sentiment,
        sentiment_score=None if f.sentiment_score is None else float(f.sentiment_score),
    )


def tag_out(t: store.TagInfo) -> TagOut:
    return TagOut(
        id=t.id,
        target_type=t.target_type,
        target_id=t.target_id,
        name=t.name,
        is_auto=t.is_auto,
        confidence=None if t.confidence is None else format(t.confidence.normalize(), "f"),  # 0.87000 → 0.87
        author_user_id=t.author_user_id,
        created_at=t.created_at,
    )


def _usage_out(u: store.MessageUsage) -> MessageUsageOut:
    return MessageUsageOut(
        status=u.status,
        tokens=TokensOut(
            input=u.input_tokens,
            cached_input=u.cached_input_tokens,
            cache_write=u.cache_write_tokens,
            output=u.output_tokens,
            reasoning=u.reasoning_tokens,
            total=u.input_tokens + u.output_tokens,
        ),
        **money(u.cost_nano, "cost"),
        **money(u.charged_nano, "charged"),
        latency_ms=u.latency_ms,
        ttft_ms=u.ttft_ms,
        byok=u.byok,
        stream=u.is_stream,
    )


def _llm_out(row: store.ConversationLlmInfo) -> ConversationLlmOut:
    return ConversationLlmOut(
        llm_id=row.llm_id,
        model=row.model,
        provider=row.provider,
        message_count=row.message_count,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        **money(row.cost_nano, "cost"),
        average_latency_ms=round(row.latency_ms_sum / row.message_count, 3) if row.message_count else None,
        first_used_at=row.first_used_at,
        last_used_at=row.last_used_at,
    )


def _owned_by_caller(caller: Caller, owner: uuid.UUID) -> bool:
    return caller.is_admin or caller.user_id == owner


# -- request bodies ------------------------------------------------------------------------------


class FeedbackIn(Body):
    """`rating`: "up" / "down" (thumbs) or an integer 1–5 (stars); `scale` may say which explicitly
    (thumbs then also takes 1 / -1)."""

    rating: int | str
    scale: Literal["thumbs", "stars"] | None = None
    comment: str | None = None
    categories: list[str] | None = None


class TagIn(Body):
    target_type: Literal["conversation", "message", "user", "workspace"]
    target_id: uuid.UUID
    name: str
    is_auto: bool = False
    confidence: Decimal | None = None
    author_user_id: uuid.UUID | None = None


# -- routes --------------------------------------------------------------------------------------


async def _visible_target(conn: Any, caller: Caller, target_type: str, target_id: uuid.UUID) -> None:
    """404 unless the target exists and the caller may see it (its owner, or a workspace's member)."""
    facts = await store.target_facts(conn, target_type, target_id)
    if not facts.exists or (not caller.is_admin and caller.user_id not in facts.owners):
        raise not_found(target_type)


class ConversationsController(Controller):
    """Conversations, feedback on messages, and tags. (Guard and dependencies: on the admin router.)"""

    path = "/"
    tags = ("conversations",)

    @get("/conversations/{conversation_id:uuid}")
    async def conversation_route(
        self,
        caller: Caller,
        engine: Engine,
        conversation_id: FromPath[uuid.UUID],
        page: Paging,
    ) -> ConversationOut:
        """A conversation with its tags, its per-model totals (conversation_llms) and a page of its messages
        (oldest first, ties by id), each with its usage and its feedback."""
        limit, offset = page.limit, page.offset
        async with engine.connect() as conn:
            conv = await store.get_conversation(conn, conversation_id)
            if conv is None or not _owned_by_caller(caller, conv.user_id):
                raise not_found("conversation")
            llm_rows = await store.conversation_llm_rows(conn, conversation_id)
            found = await store.list_messages(conn, conversation_id, limit=limit, offset=offset)
            ratings = await store.feedback_for_messages(conn, [m.id for m in found.items])
            conv_tags = await store.list_tags(
                conn, "conversation", conversation_id, limit=MAX_TAGS_SHOWN, offset=0
            )
        return ConversationOut(
            id=conv.id,
            user_id=conv.user_id,
            workspace_id=conv.workspace_id,
            api_key_id=conv.api_key_id,
            title=conv.title,
            created_at=conv.created_at,
            updated_at=conv.updated_at,
            tags=[tag_out(t) for t in conv_tags.items],
            llms=[_llm_out(row) for row in llm_rows],
            messages=MessagePage(
                data=[
                    MessageOut(
                        id=m.id,
                        role=m.role,
                        llm_id=m.llm_id,
                        model=m.model,
                        request_id=m.request_id,
                        finish_reason=m.finish_reason,
                        created_at=m.created_at,
                        prompt=m.prompt,
                        content=m.content,
                        usage=None if m.usage is None else _usage_out(m.usage),
                        feedback=[feedback_out(f) for f in ratings.get(m.id, [])],
                    )
                    for m in found.items
                ],
                total=found.total,
                limit=limit,
                offset=offset,
                has_more=found.has_more,
            ),
        )

    @post("/messages/{message_id:uuid}/feedback")
    async def rate_message_route(
        self, caller: Caller, engine: Engine, message_id: FromPath[uuid.UUID], data: JSONBody[FeedbackIn]
    ) -> Response[FeedbackOut]:
        """Rate a message: thumbs ("up"/"down") or stars (1–5), with an optional comment and categories.
        201 when new; 200 when it replaces the caller's earlier rating of the message."""
        offline = offline_models(engine)  # the tagger process: the sentiment model is not loaded here
        async with engine.begin() as conn:
            message = await store.get_message(conn, message_id)
            if message is None or not _owned_by_caller(caller, message.user_id):
                raise not_found("message")
            saved, created = await service.rate_message(
                conn,
                message,
                user_id=caller.user_id,
                rating=data.rating,
                scale=data.scale,
                comment=data.comment,
                categories=data.categories,
                judge=offline.sentiment_now if offline is not None else None,
            )
        # the tagger model's, when configured; the offline one later, when the tagger process did not answer
        offer_feedback_sentiment(engine, saved.id, saved.comment, has_sentiment=saved.sentiment is not None)
        return Response(feedback_out(saved), status_code=201 if created else 200)

    @get("/messages/{message_id:uuid}/feedback")
    async def list_feedback_route(
        self, caller: Caller, engine: Engine, page: Paging, message_id: FromPath[uuid.UUID]
    ) -> FeedbackPage:
        """A message's feedback, oldest first (ties by id)."""
        limit, offset = page.limit, page.offset
        async with engine.connect() as conn:
            message = await store.get_message(conn, message_id)
            if message is None or not _owned_by_caller(caller, message.user_id):
                raise not_found("message")
            found = await store.list_feedback(conn, message_id, limit=limit, offset=offset)
        return FeedbackPage(
            data=[feedback_out(f) for f in found.items],
            total=found.total,
            limit=limit,
            offset=offset,
            has_more=found.has_more,
        )

    @post("/tags")
    async def add_tag_route(self, caller: Caller, engine: Engine, data: JSONBody[TagIn]) -> Response[TagOut]:
        """Tag a conversation, message, user or workspace. 201 when new; 200 with the existing tag when the
        target carries that name already."""
        async with engine.begin() as conn:
            # Someone else's target is a 404 before anything about the body is judged.
            await _visible_target(conn, caller, data.target_type, data.target_id)
            if not caller.is_admin:
                if data.is_auto:
                    raise GatewayError(
                        403,
                        "Only the admin key adds automatic tags.",
                        type="permission_error",
                        param="is_auto",
                    )
                if data.author_user_id not in (None, caller.user_id):
                    raise GatewayError(
                        403,
                        "A user's tags are written by that user; 'author_user_id' needs the admin key.",
                        type="permission_error",
                        param="author_user_id",
                    )
            tag, created = await service.add_tag(
                conn,
                target_type=data.target_type,
                target_id=data.target_id,
                name=data.name,
                is_auto=data.is_auto,
                confidence=data.confidence,
                author_user_id=caller.user_id if not caller.is_admin else data.author_user_id,
            )
        return Response(tag_out(tag), status_code=201 if created else 200)

    @get("/tags/{target_type:str}/{target_id:uuid}")
    async def list_tags_route(
        self,
        caller: Caller,
        engine: Engine,
        target_type: FromPath[str],
        target_id: FromPath[uuid.UUID],
        page: Paging,
    ) -> TagPage:
        """The tags of one target, oldest first (ties by id)."""
        if target_type not in TAG_TARGET_TYPES:
            raise bad_request(
                f"'target_type' must be one of {', '.join(TAG_TARGET_TYPES)}.", param="target_type"
            )
        limit, offset = page.limit, page.offset
        async with engine.connect() as conn:
            await _visible_target(conn, caller, target_type, target_id)
            found = await store.list_tags(conn, target_type, target_id, limit=limit, offset=offset)
        return TagPage(
            data=[tag_out(t) for t in found.items],
            total=found.total,
            limit=limit,
            offset=offset,
            has_more=found.has_more,
        )

    @delete("/tags/{tag_id:uuid}")
    async def delete_tag_route(self, caller: Caller, engine: Engine, tag_id: FromPath[uuid.UUID]) -> None:
        """Remove a tag (204). A user removes only tags they wrote, on targets they can see."""
        async with engine.begin() as conn:
            tag = await store.get_tag(conn, tag_id)
            if tag is None:
                raise not_found("tag")
            if not caller.is_admin:
                facts = await store.target_facts(conn, tag.target_type, tag.target_id)
                if caller.user_id not in facts.owners:
                    raise not_found("tag")
                if tag.author_user_id != caller.user_id:
                    raise GatewayError(
                        403,
                        "Only the tag's author (or the admin key) removes it.",
                        type="permission_error",
                        code="not_tag_author",
                    )
            await store.delete_tag(conn, tag_id)
