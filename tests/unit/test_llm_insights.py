"""The tagger model's client (`gateway/chat/llm_insights.py`) against a stand-in chat service: what it sends
(an internal, bounded request under the platform principal), what it keeps from an answer, and that every
fallback is logged at info with the reason and never with the conversation's text."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

from config import Settings
from gateway.chat.admit import Inbound
from gateway.chat.llm_insights import LlmInsights
from gateway.errors import GatewayError
from insights.sentiment import Sentiment
from insights.tagging import TagPrediction
from storage.accounts.keys import KeyPrincipal

SECRET = "my salary is 12345 and my password is hunter2"
PRINCIPAL = KeyPrincipal(uuid.uuid4(), uuid.uuid4(), None, None, None, None, None)


class StandIn:
    """What LlmInsights uses of ChatService: `complete(inbound)` (and `engine`, unused here)."""

    def __init__(self, answer: str | Exception) -> None:
        self.answer = answer
        self.engine: Any = None
        self.sent: list[Inbound] = []

    async def complete(self, inbound: Inbound) -> tuple[bytes, dict[str, str]]:
        self.sent.append(inbound)
        if isinstance(self.answer, Exception):
            raise self.answer
        body = {"choices": [{"message": {"role": "assistant", "content": self.answer}}]}
        return json.dumps(body).encode(), {}


def model_with(answer: str | Exception) -> tuple[LlmInsights, StandIn]:
    chat = StandIn(answer)
    llm = LlmInsights(Settings(tagger_model="gpt-4o-mini"), chat)  # type: ignore[arg-type]

    async def principal() -> KeyPrincipal:
        return PRINCIPAL

    llm.principal = principal  # type: ignore[method-assign]
    return llm, chat


def no_text_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert SECRET not in record.getMessage() and SECRET not in json.dumps(record.__dict__, default=str)


async def test_a_confident_answer_is_used_and_the_request_is_internal() -> None:
    llm, chat = model_with('{"tags": [{"tag": "legal", "confidence": 0.9}]}')
    assert await llm.tag([SECRET]) == [TagPrediction("legal", 0.9)]
    (inbound,) = chat.sent
    assert inbound.internal and inbound.principal == PRINCIPAL
    assert inbound.request.model == "gpt-4o-mini" and inbound.request.max_output_tokens == 200
    assert not inbound.request.stream
    assert (llm.asked, llm.answered) == (1, 1)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("Sure, it is about law.", "unparsable"),
        ('{"tags": [{"tag": "legal", "confidence": 0.2}]}', "unparsable or under the confidence threshold"),
        (GatewayError(402, "Insufficient credits", code="insufficient_credits"), "request failed"),
        (RuntimeError("boom"), "request failed"),
    ],
)
async def test_fallbacks_are_logged_at_info_without_the_text(
    answer: str | Exception, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    llm, _chat = model_with(answer)
    with caplog.at_level(logging.INFO, logger="synapgate.insights"):
        assert await llm.tag([SECRET]) is None
        assert await llm.sentiment(SECRET) is None
    infos = [r for r in caplog.records if r.name == "synapgate.insights" and r.levelno == logging.INFO]
    assert len(infos) == 2 and all(reason in r.getMessage() for r in infos)
    assert all(r.__dict__.get("request_id", "").startswith("req_") for r in infos)
    if isinstance(answer, GatewayError):
        assert infos[0].__dict__["status"] == 402
    no_text_logged(caplog)
    assert llm.answered == 0


async def test_sentiment_answer_is_used() -> None:
    llm, _chat = model_with('{"sentiment": "negative", "score": -0.6, "confidence": 0.8}')
    assert await llm.sentiment(SECRET) == Sentiment("negative", -0.6)


def test_needs_a_model() -> None:
    with pytest.raises(ValueError, match="SYNAPGATE_TAGGER_MODEL"):
        LlmInsights(Settings(), StandIn("x"))  # type: ignore[arg-type]
