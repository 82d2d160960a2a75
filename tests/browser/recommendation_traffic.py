"""Planted traffic with a cheaper-equal model per task tag, so the recommendation rule has evidence to find.

For each (tag, current, candidate): `current` serves 220 tagged requests rated 90 up / 10 down, `candidate`
300 rated 97 / 3, same latency, no errors (the integration test's planted recommendation,
tests/integration/test_insights.py). Costs are recorded at the catalog's prices, so the other pages stay
coherent. Used by the browser test and scripts/screenshots.py; a test helper, not a gateway feature.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pricing.cost import Usage, price_usage
from storage.catalog.repository import load_catalog
from storage.db import create_engine
from storage.models import Conversation, Message, MessageFeedback, Tag, UsageLog, table_of

PLANTS = (("coding", "gpt-4o", "gpt-4o-mini"), ("writing", "claude-3-sonnet", "claude-3-haiku"))


async def plant_cheaper_equal_models(
    database_url: str, user_id: uuid.UUID, plants: Sequence[tuple[str, str, str]] = PLANTS
) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            catalog = await load_catalog(conn)
        when = datetime.now(UTC) - timedelta(days=1)
        rows: dict[str, list[dict[str, object]]] = {"conv": [], "msg": [], "log": [], "fb": [], "tag": []}
        for tag, current, candidate in plants:
            for model, n, ups, downs in ((current, 220, 90, 10), (candidate, 300, 97, 3)):
                found = catalog.get(model)
                assert found is not None, model
                for i in range(n):
                    conv, msg, request_id = uuid.uuid4(), uuid.uuid4(), f"plant-{uuid.uuid4().hex}"
                    usage = Usage(prompt_tokens=900 + i % 7, completion_tokens=300 + i % 5)
                    cost = price_usage(usage, found).total_nano
                    at = when + timedelta(seconds=i)
                    rows["conv"].append({"id": conv, "user_id": user_id, "created_at": at, "updated_at": at})
                    rows["msg"].append(
                        {
                            "id": msg,
                            "conversation_id": conv,
                            "user_id": user_id,
                            "llm_id": found.id,
                            "request_id": request_id,
                            "role": "assistant",
                            "created_at": at,
                        }
                    )
                    rows["log"].append(
                        {
                            "request_id": request_id,
                            "message_id": msg,
                            "user_id": user_id,
                            "llm_id": found.id,
                            "conversation_id": conv,
                            "provider": found.provider,
                            "model": model,
                            "input_tokens": usage.prompt_tokens,
                            "output_tokens": usage.completion_tokens,
                            "cost_nano": cost,
                            "charged_nano": cost,
                            "latency_ms": 400,
                            "status": "success",
                            "created_at": at,
                        }
                    )
                    rows["tag"].append(
                        {
                            "id": uuid.uuid4(),
                            "target_type": "conversation",
                            "target_id": conv,
                            "name": tag,
                            "is_auto": True,
                            "created_at": at,
                        }
                    )
                    if i < ups + downs:
                        rows["fb"].append(
                            {
                                "id": uuid.uuid4(),
                                "message_id": msg,
                                "user_id": user_id,
                                "scale": "thumbs",
                                "rating": 1 if i < ups else -1,
                                "created_at": at,
                                "llm_id": found.id,
                                "message_user_id": user_id,
                                "message_created_at": at,
                            }
                        )
        async with engine.begin() as conn:
            await conn.execute(table_of(Conversation).insert(), rows["conv"])
            await conn.execute(table_of(Message).insert(), rows["msg"])
            await conn.execute(table_of(UsageLog).insert(), rows["log"])
            await conn.execute(table_of(Tag).insert(), rows["tag"])
            await conn.execute(table_of(MessageFeedback).insert(), rows["fb"])
    finally:
        await engine.dispose()
