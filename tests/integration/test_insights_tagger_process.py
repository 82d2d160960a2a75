"""The offline models live in one tagger process per gateway, not in the request-serving workers (issue 15:
RSS per worker). A real `synapgate serve --workers 2` on PostgreSQL + Redis, looked at from outside through
/proc (no debug hook in the app): automatic tags and comment sentiments are still written, no serving worker
has scikit-learn, SciPy or NumPy loaded after tagging happened, exactly one process of the gateway has them,
and killing that process fails no request (it is started again and tagging resumes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.tagger_process import TaggerClient
from pricing.money import parse_usd
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.factory import build_ledger, redis_for
from storage.db import create_engine
from tests.environment import child_pids, free_port
from tests.integration.conftest import Gateway, MockServerThread, make_settings

pytestmark = pytest.mark.integration

ADMIN = "sk-admin-tagger-process-test"
HEAVY = ("sklearn", "scipy", "numpy")
REPO = Path(__file__).resolve().parents[2]


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(child_pids(p))
    return out


def heavy_libraries(pid: int) -> set[str]:
    """Which of scikit-learn, SciPy, NumPy have a compiled module mapped in the process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in HEAVY if f"/{name}/" in maps}


def is_tagger(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"gateway.tagger_process" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


@dataclass
class Served:
    url: str
    key: str
    process: subprocess.Popen[bytes]

    def processes(self) -> tuple[list[int], list[int]]:
        """(serving processes: the supervisor and its uvicorn workers, tagger processes)."""
        pids = [p for p in tree(self.process.pid) if Path(f"/proc/{p}").exists()]
        return [p for p in pids if not is_tagger(p)], [p for p in pids if is_tagger(p)]


@pytest.fixture
async def served(pg_database: str, redis_url: str, mock: MockServerThread) -> AsyncIterator[Served]:
    settings = make_settings(pg_database, redis_url, mock.url)
    engine = create_engine(settings.database_url)
    redis = redis_for(settings)
    try:
        async with engine.begin() as conn:
            user = await create_user(conn, f"{uuid.uuid4().hex[:10]}@example.com")
            _key_id, key = await create_key(conn, user.user_id, workspace_id=user.workspace_id)
        await add_credits(
            engine, build_ledger(settings, engine, redis), user.user_id, parse_usd("10"), "seed"
        )
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPGATE_")}
    env |= {
        "SYNAPGATE_DATABASE_URL": pg_database,
        "SYNAPGATE_REDIS_URL": redis_url,
        "SYNAPGATE_OPENAI_BASE_URL": f"{mock.url}/v1",
        "SYNAPGATE_OPENAI_API_KEY": "sk-platform-openai",
        "SYNAPGATE_ADMIN_KEY": ADMIN,
        "SYNAPGATE_AUTO_TAGS": "true",
        "SYNAPGATE_STORE_MESSAGE_CONTENT": "false",
        "SYNAPGATE_LOG_LEVEL": "warning",
        "PYTHONPATH": str(REPO),
    }
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, in set-up
        [*argv, "--workers", "2"], env=env, cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                assert process.poll() is None, "the gateway exited"
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/ready")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield Served(url, key, process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


async def chat(client: httpx.AsyncClient, served: Served, text: str) -> httpx.Response:
    return await client.post(
        f"{served.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {served.key}"},
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"{text} [mock completion_tokens=3]"}],
        },
    )


async def auto_tags(
    client: httpx.AsyncClient, served: Served, conversation: str, wait: float = 120
) -> list[str]:
    for _ in range(int(wait * 2)):
        found = await client.get(
            f"{served.url}/api/v1/tags/conversation/{conversation}",
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert found.status_code == 200, found.text
        names = [t["name"] for t in found.json()["data"] if t["is_auto"]]
        if names:
            return names
        await asyncio.sleep(0.5)
    return []


async def test_workers_stay_free_of_the_models_and_tagging_survives_a_killed_tagger(served: Served) -> None:
    async with httpx.AsyncClient(timeout=90) as client:
        sent = await chat(
            client, served, "Write a Python function that parses a CSV file and raises on bad rows"
        )
        assert sent.status_code == 200, sent.text
        assert await auto_tags(client, served, sent.headers["x-synapgate-conversation-id"]) == ["coding"]
        rated = await client.post(
            f"{served.url}/api/v1/messages/{sent.headers['x-synapgate-message-id']}/feedback",
            headers={"Authorization": f"Bearer {served.key}"},
            json={"rating": "down", "comment": "Terrible answer, completely wrong and useless."},
        )
        assert rated.status_code == 201, rated.text
        assert rated.json()["sentiment"] == "negative" and rated.json()["sentiment_score"] < 0

        serving, taggers = served.processes()
        assert len(serving) >= 3  # uvicorn's supervisor, its two workers (and multiprocessing's helper)
        assert {p: heavy_libraries(p) for p in serving} == {p: set() for p in serving}
        assert len(taggers) == 1 and heavy_libraries(taggers[0]) == set(HEAVY)  # loaded once, not per worker

        os.kill(taggers[0], signal.SIGKILL)
        # No request fails while it is away; tags resume once it is back.
        answers = [
            await chat(client, served, f"Translate 'good morning number {i}' into French") for i in range(5)
        ]
        assert [a.status_code for a in answers] == [200] * 5
        later = await chat(client, served, "Solve for x: 3x + 7 = 22, show each step")
        assert later.status_code == 200
        assert await auto_tags(client, served, later.headers["x-synapgate-conversation-id"]) == ["math"]
        serving_after, taggers_after = served.processes()
        assert len(taggers_after) == 1 and taggers_after != taggers
        assert all(heavy_libraries(p) == set() for p in serving_after)


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the in-process gateway of the test below: the tagger process is the same on both


async def test_a_comment_the_tagger_could_not_judge_is_saved_and_its_sentiment_filled_in_later(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    _user, key = await gateway.seed_user("1")
    sent = await gateway.openai(key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi [mock completion_tokens=2]"}]
    )
    message = sent.headers["x-synapgate-message-id"]

    async def no_answer(self: TaggerClient, comment: str) -> None:  # the process restarting meanwhile
        return None

    monkeypatch.setattr(TaggerClient, "sentiment_now", no_answer)  # the request's ask only: not the later one
    headers = {"Authorization": f"Bearer {key}"}
    rated = await gateway.request(
        "POST",
        f"/api/v1/messages/{message}/feedback",
        headers=headers,
        json={"rating": "down", "comment": "Terrible answer, completely wrong and useless."},
    )
    assert rated.status_code == 201, rated.text  # the request does not fail for it
    assert rated.json()["sentiment"] is None
    listed: list[dict[str, Any]] = []
    for _ in range(240):  # the background task asks again (the process starts and loads its models)
        listed = (
            await gateway.request("GET", f"/api/v1/messages/{message}/feedback", headers=headers)
        ).json()["data"]
        if listed and listed[0]["sentiment"] is not None:
            break
        await asyncio.sleep(0.5)
    assert listed[0]["sentiment"] == "negative" and listed[0]["sentiment_score"] < 0
