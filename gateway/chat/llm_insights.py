"""The tagger model (`SYNAPGATE_TAGGER_MODEL`) through the gateway's own metered path.

Automatic tags and feedback sentiment ask the configured catalog model through `ChatService.complete` — the
same admission, reservation, upstream call, record and ledger debit as a client's request — under the key of
a platform user (`SYNAPGATE_TAGGER_USER`, created on first use: storage/insights/platform.py), so what tagging
costs shows in usage and analytics like any user's spend. The request is marked internal: it is never
auto-tagged itself and its text is never stored, whatever `SYNAPGATE_STORE_MESSAGE_CONTENT` says.

Any failure — no credit, a limit, the provider down, an unparsable or low-confidence answer — returns None
and the caller uses the offline model; it is logged at info with the request id and the reason, never with
the conversation's text. This runs in the background task of `gateway/chat/tagging.py`, after the user's own
request was answered: it never blocks or fails it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from config import Settings
from gateway.api.chat_request import parse_chat_request
from gateway.chat.admit import Inbound
from gateway.errors import GatewayError
from storage.accounts.keys import KeyPrincipal
from storage.insights.platform import platform_principal

if TYPE_CHECKING:  # the insight models load scikit-learn: imported where used
    from gateway.chat.service import ChatService
    from insights.labels import Sentiment, TagPrediction

log = logging.getLogger("synapgate.insights")

MAX_REPLY_TOKENS = 200
PRINCIPAL_SECONDS = 60.0  # a disabled platform user or key is noticed within this time


class LlmInsights:
    """Tags and comment sentiment from the tagger model, charged to the platform user; None = use offline."""

    def __init__(self, settings: Settings, chat: ChatService) -> None:
        if not settings.tagger_model:
            raise ValueError("SYNAPGATE_TAGGER_MODEL is not set")
        self.model = settings.tagger_model
        self.user_email = settings.tagger_user
        self.threshold = settings.tagger_min_confidence
        self.chat = chat
        self._principal: KeyPrincipal | None = None
        self._principal_until = 0.0
        self.asked = 0  # requests sent through the chat service
        self.answered = 0  # answers used (the others fell back to the offline models)

    async def principal(self) -> KeyPrincipal | None:
        """The platform user's key principal (created on first use), re-read every minute."""
        now = time.monotonic()
        if now >= self._principal_until:
            self._principal = await platform_principal(self.chat.engine, self.user_email)
            self._principal_until = now + PRINCIPAL_SECONDS
        return self._principal

    async def _ask(self, messages: list[dict[str, str]], purpose: str) -> tuple[str, str] | None:
        """The reply text and request id of one metered request, or None (logged at info: the reason only)."""
        request_id = f"req_{uuid.uuid4().hex}"
        why: dict[str, Any] = {"purpose": purpose, "model": self.model, "request_id": request_id}
        try:
            principal = await self.principal()
            if principal is None:
                log.info("tagger model not used: platform user or key disabled; offline model", extra=why)
                return None
            body = {
                "model": self.model,
                "messages": messages,
                "max_tokens": MAX_REPLY_TOKENS,
                "temperature": 0,
            }
            request = parse_chat_request(msgspec.json.encode(body))
            self.asked += 1
            answer, _headers = await self.chat.complete(
                Inbound(request_id, {}, principal, request, internal=True)
            )
        except GatewayError as exc:  # refused (402 no credit, 429 limit, 404 model …) or the provider failed
            log.info(
                "tagger model request failed; offline model used",
                extra={**why, "status": exc.status, "code": exc.code},
            )
            return None
        except Exception as exc:  # never let tagging fail loudly: it is an enrichment
            log.info(
                "tagger model request failed; offline model used", extra={**why, "error": type(exc).__name__}
            )
            return None
        try:
            content = msgspec.json.decode(answer)["choices"][0]["message"]["content"]
        except (msgspec.DecodeError, KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            log.info("tagger model answer has no text; offline model used", extra=why)
            return None
        return content, request_id

    async def tag(self, texts: Sequence[str]) -> list[TagPrediction] | None:
        """The model's confident tags from the default taxonomy, or None (then the offline tagger decides)."""
        from insights.labels import DEFAULT_TAXONOMY
        from insights.llm_prompts import build_tagging_messages, parse_tagging_reply

        asked = await self._ask(build_tagging_messages(texts, DEFAULT_TAXONOMY), "tags")
        if asked is None:
            return None
        reply, request_id = asked
        found = parse_tagging_reply(reply, DEFAULT_TAXONOMY, threshold=self.threshold)
        if not found:
            log.info(
                "tagger model answer unparsable or under the confidence threshold; offline model used",
                extra={"purpose": "tags", "model": self.model, "request_id": request_id},
            )
            return None
        self.answered += 1
        return found

    async def sentiment(self, comment: str) -> Sentiment | None:
        """The model's sentiment of a feedback comment, or None (the offline one stands)."""
        from insights.llm_prompts import build_sentiment_messages, parse_sentiment_reply

        asked = await self._ask(build_sentiment_messages(comment), "sentiment")
        if asked is None:
            return None
        reply, request_id = asked
        found = parse_sentiment_reply(reply, threshold=self.threshold)
        if found is None:
            log.info(
                "tagger model answer unparsable or under the confidence threshold; offline model used",
                extra={"purpose": "sentiment", "model": self.model, "request_id": request_id},
            )
            return None
        self.answered += 1
        return found
