"""The pure parts of automatic tagging on the live path: which requests open a conversation, what text is
classified, and the bounded queue that never makes a request wait."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from gateway.chat.tagging import AutoTagQueue, TagJob
from storage.insights.service import is_first_exchange, user_texts


def test_user_texts_reads_strings_and_text_parts_of_user_turns_only() -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Resuma este contrato"},
        {"role": "assistant", "content": "Claro."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "e traduza"}, {"type": "image_url", "image_url": {}}],
        },
        {"role": "user", "content": "   "},
        "not a message",
    ]
    assert user_texts(messages) == ["Resuma este contrato", "e traduza"]
    assert user_texts("nope") == []


def test_first_exchange_is_exactly_one_user_turn() -> None:
    assert is_first_exchange([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])
    assert not is_first_exchange(
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    )
    assert not is_first_exchange([{"role": "system", "content": "s"}])
    assert not is_first_exchange(None)


async def test_a_full_queue_drops_the_offer_without_waiting() -> None:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    queue = AutoTagQueue(engine, maxsize=1)
    blocker = asyncio.Event()

    async def consume_slowly() -> None:  # stands in for the consumer: holds the one slot
        await blocker.wait()

    queue._task = asyncio.create_task(consume_slowly())  # the consumer is "running": offer starts none
    job = TagJob(uuid.uuid4(), ("write a poem",))
    assert queue.offer(job) is True
    assert queue.offer(TagJob(uuid.uuid4(), ("write a poem",))) is False and queue.dropped == 1
    blocker.set()
    await queue.close()
    await engine.dispose()


async def test_a_repeated_opening_is_queued_once() -> None:
    """Single-turn API calls repeat the same opening (the same derived conversation) all day: tagged once."""
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    queue = AutoTagQueue(engine, maxsize=100)
    blocker = asyncio.Event()

    async def consume_slowly() -> None:
        await blocker.wait()

    queue._task = asyncio.create_task(consume_slowly())
    same, other = uuid.uuid4(), uuid.uuid4()
    assert queue.offer(TagJob(same, ("write a poem",))) is True
    assert [queue.offer(TagJob(same, ("write a poem",))) for _ in range(50)] == [False] * 50
    assert queue.offer(TagJob(other, ("fix my sql",))) is True
    assert queue.queue.qsize() == 2 and queue.repeated == 50 and queue.dropped == 0
    blocker.set()
    await queue.close()
    await engine.dispose()
