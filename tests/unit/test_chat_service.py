"""ChatService without sockets: the in-process FakeUpstream, a migrated SQLite file and the SQL ledger.

Each test drives one request through the real admission, retry/fallback loop, relay, pricing and recorder,
and checks what the client got, the usage_logs row and the ledger (balance and open reservations).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from devtools.fake_upstream import Answer, FakeUpstream
from devtools.mock_upstream.anthropic import anthropic_message
from devtools.mock_upstream.directives import MockConfig, parse_directives
from devtools.mock_upstream.openai import openai_completion, openai_error, openai_stream
from gateway.api.chat_request import parse_chat_request
from gateway.auth import KeyAuthenticator
from gateway.catalog_cache import CatalogCache
from gateway.chat import ChatService, Inbound
from gateway.credentials import CredentialResolver
from gateway.errors import GatewayError
from gateway.providers.base import ProviderError, UpstreamRequest
from gateway.providers.registry import build_adapters
from migrations.runner import upgrade
from pricing.tokens import count_completion_tokens
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.base import Reservation
from storage.billing.ledger.sql import SqlLedger
from storage.db import create_engine
from storage.usage.group_commit import GroupCommitRecorder
from storage.usage.recorder import CompletionRecord, RecordResult

CREDIT_NANO = 10 * 10**9  # 10 USD


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chat_service") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def openai_answer(req: UpstreamRequest, seq: int = 1) -> Answer:
    """What the mock provider would answer, in OpenAI's format, for this request."""
    body = msgspec.json.decode(req.body)
    behaviour = parse_directives(body["messages"][-1]["content"], MockConfig())
    if body.get("stream"):
        plan = openai_stream(body, behaviour, seq, None)
        return 200, {"content-type": "text/event-stream"}, [*plan.head, *plan.content, *plan.tail]
    return 200, {"content-type": "application/json"}, openai_completion(body, behaviour, seq, None)


@dataclass
class Harness:
    service: ChatService
    upstream: FakeUpstream
    engine: AsyncEngine
    ledger: SqlLedger
    user_id: uuid.UUID
    key: str

    def inbound(self, content: str = "hello", *, stream: bool = False, model: str = "gpt-4o-mini") -> Inbound:
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
        if stream:
            body["stream"] = True
        request = parse_chat_request(msgspec.json.encode(body))
        return Inbound(
            f"req_{uuid.uuid4().hex}", {"authorization": f"Bearer {self.key}"}, self.principal, request
        )

    async def start(self) -> None:
        self.principal = await self.service.authenticate({"authorization": f"Bearer {self.key}"})

    async def usage_rows(self) -> list[Any]:
        async with self.engine.connect() as conn:
            columns = "status, model, attempts, cost_nano, charged_nano, error_code, http_status, message_id"
            return list((await conn.execute(text(f"SELECT {columns} FROM usage_logs"))).all())

    async def debits(self) -> int:
        async with self.engine.connect() as conn:
            total = (
                await conn.execute(text("SELECT COALESCE(SUM(amount_nano), 0) FROM billing_events"))
            ).scalar()
        return int(total or 0) - CREDIT_NANO


class FailingRecorder(GroupCommitRecorder):
    """A recorder whose database write always fails."""

    async def record(self, record: CompletionRecord, reservation: Reservation | None) -> RecordResult:
        raise RuntimeError("the database is gone")


async def make_harness(
    path: Path,
    handler: Callable[[UpstreamRequest], Answer],
    recorder_class: type[GroupCommitRecorder] = GroupCommitRecorder,
    **overrides: Any,
) -> Harness:
    url = f"sqlite+aiosqlite:///{path}"
    settings = Settings(
        database_url=url,
        log_level="warning",
        openai_api_key="sk-platform-openai",
        openai_base_url="http://openai.fake/v1",
        anthropic_api_key="sk-platform-anthropic",
        anthropic_base_url="http://anthropic.fake/v1",
        upstream_retry_backoff_seconds=0.0,
        **{"auto_tags": False, **overrides},  # no background classifier in these tests
    )
    engine = create_engine(url)
    ledger = SqlLedger(engine, settings.reservation_ttl_seconds)
    async with engine.begin() as conn:
        user = await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")
        _key_id, key = await create_key(conn, user.user_id, workspace_id=user.workspace_id)
    await add_credits(engine, ledger, user.user_id, CREDIT_NANO, f"seed:{user.user_id}")
    catalog = CatalogCache(engine)
    await catalog.refresh()
    upstream = FakeUpstream(handler)
    service = ChatService(
        settings=settings,
        engine=engine,
        ledger=ledger,
        auth=KeyAuthenticator(engine, 0.5),
        credentials=CredentialResolver(settings, engine, None),
        catalog=catalog,
        upstream=upstream,
        adapters=build_adapters(),
        recorder=recorder_class(engine, ledger),
    )
    harness = Harness(service, upstream, engine, ledger, user.user_id, key)
    await harness.start()
    return harness


@pytest.fixture
async def db_path(migrated_sqlite: Path, tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "synapgate.db"
    shutil.copy(migrated_sqlite, path)
    yield path


async def test_a_completion_is_recorded_and_debited_before_it_is_answered(db_path: Path) -> None:
    h = await make_harness(db_path, openai_answer)
    body, headers = await h.service.complete(h.inbound("[mock prompt_tokens=1000 completion_tokens=10]"))
    answer = msgspec.json.decode(body)
    assert answer["choices"][0]["message"]["content"] == " ".join(f"mock{i}" for i in range(10))
    # gpt-4o-mini: 1000 × 0.15 + 10 × 0.60 per 1M tokens = 156 µUSD
    assert headers["x-synapgate-cost-usd"] == "0.000156000"
    assert headers["x-synapgate-attempts"] == "1"
    [row] = await h.usage_rows()
    assert (row.status, row.model, row.cost_nano, row.charged_nano) == (
        "success",
        "gpt-4o-mini",
        156_000,
        156_000,
    )
    assert await h.debits() == -156_000
    assert await h.ledger.available(h.user_id) == CREDIT_NANO - 156_000  # no reservation left open
    assert h.upstream.requests[0].url == "http://openai.fake/v1/chat/completions"
    await h.engine.dispose()


async def test_a_stream_is_relayed_then_recorded_then_done(db_path: Path) -> None:
    h = await make_harness(db_path, openai_answer)
    sent: list[dict[str, Any]] = []
    started: list[dict[str, str]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def start(headers: dict[str, str]) -> None:
        started.append(headers)

    await h.service.stream(h.inbound("[mock completion_tokens=3]", stream=True), start, send, asyncio.Event())
    bodies = [m["body"] for m in sent]
    assert started and started[0]["x-synapgate-model"] == "gpt-4o-mini"
    assert bodies[-2:] == [b"data: [DONE]\n\n", b""] and sent[-1]["more_body"] is False
    text_chunks = [msgspec.json.decode(b[6:]) for b in bodies[:-2]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in text_chunks) == "mock0 mock1 mock2"
    assert all("usage" not in c for c in text_chunks)  # the client did not ask for the usage chunk
    [row] = await h.usage_rows()
    assert row.status == "success" and row.cost_nano > 0
    assert await h.ledger.available(h.user_id) == CREDIT_NANO - row.charged_nano
    assert h.upstream.streams[0].closed
    await h.engine.dispose()


async def test_a_retryable_failure_is_retried_then_succeeds(db_path: Path) -> None:
    calls = 0

    def flaky(req: UpstreamRequest) -> Answer:
        nonlocal calls
        calls += 1
        if calls == 1:
            return 529, {"retry-after": "0"}, openai_error(529)
        return openai_answer(req)

    h = await make_harness(db_path, flaky)
    _body, headers = await h.service.complete(h.inbound())
    assert headers["x-synapgate-attempts"] == "2" and calls == 2
    [row] = await h.usage_rows()
    assert (row.status, row.attempts) == ("success", 2)
    await h.engine.dispose()


async def test_a_failing_model_falls_back_and_is_priced_at_the_fallback(db_path: Path) -> None:
    def primary_down(req: UpstreamRequest) -> Answer:
        if req.url.startswith("http://openai.fake"):
            raise ProviderError(
                502, "The upstream provider could not be reached.", code="upstream_unreachable"
            )
        body = msgspec.json.decode(req.body)
        behaviour = parse_directives("", MockConfig())
        return 200, {"content-type": "application/json"}, anthropic_message(body, behaviour, 1, None)

    h = await make_harness(
        db_path, primary_down, upstream_max_retries=1, fallbacks={"gpt-4o-mini": ["claude-3-haiku"]}
    )
    _body, headers = await h.service.complete(h.inbound())
    assert headers["x-synapgate-model"] == "claude-3-haiku"
    assert headers["x-synapgate-attempts"] == "3"  # two on the primary, one on the fallback
    [row] = await h.usage_rows()
    assert (row.status, row.model, row.attempts) == ("success", "claude-3-haiku", 3)
    assert await h.ledger.available(h.user_id) == CREDIT_NANO - row.charged_nano
    await h.engine.dispose()


async def test_an_upstream_4xx_is_passed_through_logged_and_not_charged(db_path: Path) -> None:
    h = await make_harness(db_path, lambda req: (400, {}, openai_error(400, "Bad 'temperature'.")))
    with pytest.raises(GatewayError) as caught:
        await h.service.complete(h.inbound())
    assert caught.value.status == 400 and "temperature" in caught.value.message
    assert len(h.upstream.requests) == 1  # a request-shaped error is not retried
    [row] = await h.usage_rows()
    assert (row.status, row.cost_nano, row.charged_nano, row.http_status) == ("error", 0, 0, 400)
    assert row.message_id is None
    assert await h.debits() == 0
    assert await h.ledger.available(h.user_id) == CREDIT_NANO  # the reservation was released
    await h.engine.dispose()


async def test_a_record_that_cannot_be_committed_is_a_503_and_releases_the_reservation(db_path: Path) -> None:
    h = await make_harness(db_path, openai_answer, recorder_class=FailingRecorder)
    with pytest.raises(GatewayError) as caught:
        await h.service.complete(h.inbound())
    assert (caught.value.status, caught.value.code) == (503, "record_failed")
    assert caught.value.headers.get("retry-after") == "1"
    assert await h.usage_rows() == []
    assert await h.debits() == 0
    assert await h.ledger.available(h.user_id) == CREDIT_NANO
    await h.engine.dispose()


async def test_a_stream_whose_record_fails_ends_with_an_error_event_and_charges_nothing(
    db_path: Path,
) -> None:
    h = await make_harness(db_path, openai_answer, recorder_class=FailingRecorder)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def start(headers: dict[str, str]) -> None:
        return None

    await h.service.stream(h.inbound(stream=True), start, send, asyncio.Event())
    last_event = sent[-2]["body"]
    assert b"record_failed" in last_event and b"[DONE]" not in b"".join(m["body"] for m in sent)
    assert await h.ledger.available(h.user_id) == CREDIT_NANO
    await h.engine.dispose()


async def test_a_cut_stream_is_billed_for_what_was_generated_and_told_to_the_client(db_path: Path) -> None:
    def cut_after_two(req: UpstreamRequest) -> Answer:
        status, headers, events = openai_answer(req)
        assert not isinstance(events, bytes)
        cut = ProviderError(502, "The upstream provider ended the stream early.", code="upstream_stream_cut")
        return status, headers, [*events[:3], cut]  # the role chunk and two words, then the connection drops

    h = await make_harness(db_path, cut_after_two)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def start(headers: dict[str, str]) -> None:
        return None

    await h.service.stream(h.inbound("[mock completion_tokens=9]", stream=True), start, send, asyncio.Event())
    assert b"upstream_stream_cut" in sent[-2]["body"] and sent[-1]["more_body"] is False
    async with h.engine.connect() as conn:
        status, code, output, source = (
            await conn.execute(text("SELECT status, error_code, output_tokens, usage_source FROM usage_logs"))
        ).one()
    assert (status, code, source) == ("error", "upstream_stream_cut", "estimated")
    assert output == count_completion_tokens("gpt-4o-mini", "mock0 mock1")[0] > 0  # counted with tiktoken
    assert await h.debits() < 0  # what was generated is charged
    await h.engine.dispose()


async def test_a_client_that_leaves_mid_stream_is_recorded_as_cancelled(db_path: Path) -> None:
    h = await make_harness(db_path, openai_answer)
    disconnected = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        disconnected.set()  # the client goes away after the first chunk

    async def start(headers: dict[str, str]) -> None:
        return None

    await h.service.stream(h.inbound("[mock completion_tokens=5]", stream=True), start, send, disconnected)
    assert all(b"[DONE]" not in m["body"] for m in sent)  # nobody to tell
    [row] = await h.usage_rows()
    assert (row.status, row.error_code) == ("cancelled", "client_disconnected")
    assert await h.ledger.available(h.user_id) == CREDIT_NANO - row.charged_nano
    await h.engine.dispose()
