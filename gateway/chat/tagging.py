"""Automatic tags on the live path, off the hot path: a bounded in-process queue and one background task.

After a recorded first exchange the chat service offers (conversation id, the user's text) here — a
`put_nowait`, nothing more. One task per process (per engine) takes them in turn and classifies the text in a
thread (scikit-learn trains on first use, ~4 s), writing the confident tags (storage/insights/service.py).
The text lives only in this queue's memory: it is never stored, so this works with
`SYNAPGATE_STORE_MESSAGE_CONTENT=false`. A full queue drops the offer (counted): tagging never slows a
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from gateway.chat.admit import Call
from storage.insights.service import auto_tag_texts, is_first_exchange, user_texts

log = logging.getLogger("synapgate.insights")

RECENT_CONVERSATIONS = 10_000  # conversation ids remembered per process so a repeated opening is tagged once


@dataclass(frozen=True, slots=True)
class TagJob:
    conversation_id: uuid.UUID
    texts: tuple[str, ...]


class AutoTagQueue:
    """A bounded queue of conversations to tag and the task that consumes it (started on first offer)."""

    def __init__(self, engine: AsyncEngine, maxsize: int) -> None:
        self.engine = engine
        self.queue: asyncio.Queue[TagJob] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.tagged = 0
        self.repeated = 0
        # Conversations offered lately: the same opening exchange sent again (the same derived conversation
        # id: single-turn API calls repeat it all day) is not classified again — its tags would be the same.
        self._recent: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._recent_max = RECENT_CONVERSATIONS
        self._task: asyncio.Task[None] | None = None

    def offer(self, job: TagJob) -> bool:
        """Queue a conversation without waiting; False (and counted) when the queue is full, or when the
        conversation was offered lately (`repeated`)."""
        if job.conversation_id in self._recent:
            self._recent.move_to_end(job.conversation_id)
            self.repeated += 1
            return False
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
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
                if await auto_tag_texts(self.engine, job.conversation_id, job.texts):
                    self.tagged += 1
            except Exception:  # one failed tagging must not stop the others
                log.exception("automatic tagging failed", extra={"conversation_id": str(job.conversation_id)})
            finally:
                self.queue.task_done()

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
    if not settings.auto_tags or not is_first_exchange(call.request.messages):
        return
    texts = user_texts(call.request.messages)
    if texts:
        auto_tag_queue(engine, settings.auto_tag_queue_size).offer(TagJob(call.conversation_id, tuple(texts)))
