"""Automatic tags on the live path, off the hot path: a bounded in-process queue and one background task.

After a recorded first exchange the chat service offers (conversation id, the user's text) here — a
`put_nowait`, nothing more. One task per process (per engine) takes them in turn and classifies the text in a
thread (scikit-learn trains on first use, ~4 s), writing the confident tags (storage/insights/service.py).
The text lives only in this queue's memory: it is never stored, so this works with
`SYNAPGATE_STORE_MESSAGE_CONTENT=false`. A full queue drops the offer (counted): tagging never slows a
request.

With `SYNAPGATE_TAGGER_MODEL` set, the task first asks that model through the gateway's own metered path
(`llm_insights.py`) and falls back to the offline tagger when it cannot answer confidently; feedback comments
are queued here too (their offline sentiment is saved with the feedback, then replaced by the model's). The
platform's own requests (`Call.internal`) are never queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from gateway.chat.admit import Call
from storage.insights.platform import set_feedback_sentiment
from storage.insights.service import auto_tag_texts, is_first_exchange, user_texts, write_auto_tags
from storage.outage import is_outage

if TYPE_CHECKING:
    from insights.sentiment import Sentiment
    from insights.tagging import TagPrediction

log = logging.getLogger("synapgate.insights")

RECENT_CONVERSATIONS = 10_000  # conversation ids remembered per process so a repeated opening is tagged once


@dataclass(frozen=True, slots=True)
class TagJob:
    conversation_id: uuid.UUID
    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SentimentJob:
    feedback_id: uuid.UUID
    comment: str


class ModelInsights(Protocol):
    """Tags and sentiment from a model (`llm_insights.LlmInsights`); None: fall back to the offline models."""

    async def tag(self, texts: Sequence[str]) -> list[TagPrediction] | None: ...

    async def sentiment(self, comment: str) -> Sentiment | None: ...


class AutoTagQueue:
    """A bounded queue of conversations to tag and the task that consumes it (started on first offer)."""

    def __init__(self, engine: AsyncEngine, maxsize: int) -> None:
        self.engine = engine
        self.queue: asyncio.Queue[TagJob | SentimentJob] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.tagged = 0
        self.repeated = 0
        self.llm: ModelInsights | None = None  # the tagger model, when SYNAPGATE_TAGGER_MODEL is set
        # Conversations offered lately: the same opening exchange sent again (the same derived conversation
        # id: single-turn API calls repeat it all day) is not classified again — its tags would be the same.
        self._recent: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._recent_max = RECENT_CONVERSATIONS
        self._task: asyncio.Task[None] | None = None

    def offer(self, job: TagJob | SentimentJob) -> bool:
        """Queue a conversation (or a feedback comment) without waiting; False (and counted) when the queue is
        full, or when the conversation was offered lately (`repeated`; comments are never deduplicated)."""
        if isinstance(job, TagJob) and job.conversation_id in self._recent:
            self._recent.move_to_end(job.conversation_id)
            self.repeated += 1
            return False
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        if isinstance(job, TagJob):
            self._recent[job.conversation_id] = None
            if len(self._recent) > self._recent_max:
                self._recent.popitem(last=False)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._consume(), name="insights:auto-tags")
        return True

    async def _consume(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                if isinstance(job, SentimentJob):
                    await self._model_sentiment(job)
                elif await self._tag(job):
                    self.tagged += 1
            except Exception as exc:  # one failed tagging must not stop the others
                if is_outage(exc):  # the database is away (logged once by its watch): tags are best effort
                    self.dropped += 1
                    continue
                log.exception("automatic tagging failed", extra={"job": type(job).__name__})
            finally:
                self.queue.task_done()

    async def _tag(self, job: TagJob) -> bool:
        """The model's tags when it answers confidently, else the offline tagger's; True when written."""
        if self.llm is not None:
            predictions = await self.llm.tag(job.texts)
            if predictions is not None:
                async with self.engine.begin() as conn:
                    return bool(await write_auto_tags(conn, job.conversation_id, predictions))
        return bool(await auto_tag_texts(self.engine, job.conversation_id, job.texts))

    async def _model_sentiment(self, job: SentimentJob) -> None:
        """Replace a comment's offline sentiment with the model's, when it answers confidently."""
        if self.llm is None:
            return
        mood = await self.llm.sentiment(job.comment)
        if mood is not None:
            async with self.engine.begin() as conn:
                await set_feedback_sentiment(conn, job.feedback_id, mood.label, mood.score)

    async def idle(self) -> None:
        """Wait until every queued conversation has been handled (tests, shutdown)."""
        await self.queue.join()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


_QUEUES: weakref.WeakKeyDictionary[AsyncEngine, AutoTagQueue] = weakref.WeakKeyDictionary()


def auto_tag_queue(engine: AsyncEngine, maxsize: int = 1000) -> AutoTagQueue:
    """The process's queue for this engine (one per app: it lives and goes with the engine)."""
    found = _QUEUES.get(engine)
    if found is None:
        found = _QUEUES[engine] = AutoTagQueue(engine, maxsize)
    return found


def offer_first_exchange(settings: Settings, engine: AsyncEngine, call: Call) -> None:
    """The chat service's one hook, after a successful record: queue a conversation's opening exchange."""
    if not settings.auto_tags or call.internal or not is_first_exchange(call.request.messages):
        return
    texts = user_texts(call.request.messages)
    if texts:
        auto_tag_queue(engine, settings.auto_tag_queue_size).offer(TagJob(call.conversation_id, tuple(texts)))


def offer_feedback_sentiment(engine: AsyncEngine, feedback_id: uuid.UUID, comment: str | None) -> None:
    """After a feedback is saved (with its offline sentiment): queue its comment for the tagger model, when
    one is configured; otherwise nothing."""
    queue = _QUEUES.get(engine)
    if queue is None or queue.llm is None or not comment or not comment.strip():
        return
    queue.offer(SentimentJob(feedback_id, comment))


def model_insights(engine: AsyncEngine) -> ModelInsights | None:
    """The tagger model of this engine's app, when `SYNAPGATE_TAGGER_MODEL` is set."""
    queue = _QUEUES.get(engine)
    return queue.llm if queue is not None else None
