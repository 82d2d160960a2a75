"""Automatic tags on the live path, off the hot path: a bounded in-process queue and one background task.

After a recorded first exchange the chat service offers (conversation id, the user's text) here — a
`put_nowait`, nothing more. One task per process (per engine) takes them in turn and asks the gateway's
tagger process (gateway/tagger_process.py: the scikit-learn models live there, loaded once per gateway,
never in a request-serving worker) for the confident tags, which it writes (storage/insights/service.py).
The text lives only in memory — this queue's, then the tagger process's: it is never stored, so this works
with `SYNAPGATE_STORE_MESSAGE_CONTENT=false`. A full queue drops the offer (counted): tagging never slows a
request. When the tagger process does not answer (it is restarted when it dies), the conversation is skipped
(counted, one log line per outage).

A feedback comment is saved with its offline sentiment from the tagger process; when it could not answer,
the comment is queued here and its sentiment filled in when it does. With `SYNAPGATE_TAGGER_MODEL` set, the
task first asks that model through the gateway's own metered path (`llm_insights.py`) and falls back to the
offline models when it cannot answer confidently; feedback comments are queued here too (their offline
sentiment is then replaced by the model's). The platform's own requests (`Call.internal`) are never queued.
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
from storage.insights.service import is_first_exchange, user_texts, write_auto_tags
from storage.outage import is_outage

if TYPE_CHECKING:
    from gateway.tagger_process import TaggerClient
    from insights.labels import Sentiment, TagPrediction

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
    offline_missing: bool = False  # saved without its offline sentiment (the tagger process did not answer)


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
        self.unanswered = 0  # jobs skipped because the tagger process did not answer
        self.llm: ModelInsights | None = None  # the tagger model, when SYNAPGATE_TAGGER_MODEL is set
        self.offline: TaggerClient | None = None  # the tagger process (set by the app's runtime)
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
                    await self._sentiment(job)
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
        predictions = await self.llm.tag(job.texts) if self.llm is not None else None
        if predictions is None:
            predictions = await self.offline.tag(job.texts) if self.offline is not None else None
            if predictions is None:  # the tagger process did not answer (logged by its client)
                self.unanswered += 1
                return False
        if not predictions:
            return False
        async with self.engine.begin() as conn:
            return bool(await write_auto_tags(conn, job.conversation_id, predictions))

    async def _sentiment(self, job: SentimentJob) -> None:
        """Replace a comment's offline sentiment with the model's, when it answers confidently; or fill in
        the offline one a feedback was saved without."""
        mood = await self.llm.sentiment(job.comment) if self.llm is not None else None
        if mood is None and job.offline_missing and self.offline is not None:
            mood = await self.offline.sentiment(job.comment)
            if mood is None:
                self.unanswered += 1
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


def offer_feedback_sentiment(
    engine: AsyncEngine, feedback_id: uuid.UUID, comment: str | None, has_sentiment: bool = True
) -> None:
    """After a feedback is saved: queue its comment for the tagger model, when one is configured, or to fill
    in the offline sentiment it was saved without (`has_sentiment` False); otherwise nothing."""
    queue = _QUEUES.get(engine)
    if queue is None or not comment or not comment.strip():
        return
    if queue.llm is not None or not has_sentiment:
        queue.offer(SentimentJob(feedback_id, comment, offline_missing=not has_sentiment))


def offline_models(engine: AsyncEngine) -> TaggerClient | None:
    """The tagger process of this engine's app (the offline tagging and sentiment models)."""
    queue = _QUEUES.get(engine)
    return queue.offline if queue is not None else None


def model_insights(engine: AsyncEngine) -> ModelInsights | None:
    """The tagger model of this engine's app, when `SYNAPGATE_TAGGER_MODEL` is set."""
    queue = _QUEUES.get(engine)
    return queue.llm if queue is not None else None
