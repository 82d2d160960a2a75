"""Shared helpers of the integration tests: the admin API, the chat SDK and the CLI, driven in-process.

Test modules import from here, never from one another.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from pricing.cost import Usage, reservation_nano
from pricing.tokens import count_prompt_tokens
from storage.catalog.repository import load_catalog
from storage.types import utcnow
from storage.usage.analytics import Sums, UsageFilters, Window
from storage.usage.recorder import CompletionRecord

if TYPE_CHECKING:
    from tests.integration.conftest import Gateway

REPO = Path(__file__).resolve().parents[2]
SHARED_TIKTOKEN = REPO.parent / "shared" / "tiktoken"
ADMIN = "admin-secret"
# A test whose subject is not the backend (request translation, error envelopes, retries) runs on the
# production one only; the `backend` fixture runs both otherwise. Issue 9: "both backends only where the
# backend is the subject (ledger, recorder, migrations, invariants)".
PRODUCTION_BACKEND_ONLY = pytest.mark.parametrize("backend", ["postgres+redis"], indirect=True)
UNKNOWN_ID = "6f1c8a52-0d7e-4c1b-9a43-2b7d1f0e9c11"
PROVIDER_KEY_VARIABLES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "XAI_API_KEY",
    "DEEPSEEK_API_KEY",
    "TOGETHER_API_KEY",
)


# -- the admin API and the chat SDK ---------------------------------------------------------------


async def api(gw: Gateway, method: str, path: str, key: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
    """One call to the admin API (`path` below /api/v1) with a bearer key."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return await gw.request(method, f"/api/v1{path}", headers=headers, **kwargs)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The OpenAI-style error envelope of a response with the expected status."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def db_id(gw: Gateway, value: uuid.UUID | str) -> str:
    """A uuid as the database stores it (32 hex characters on SQLite)."""
    value = uuid.UUID(str(value))
    return value.hex if gw.settings.is_sqlite else str(value)


async def create_user(gw: Gateway, email: str | None = None, **extra: Any) -> dict[str, Any]:
    response = await api(
        gw, "POST", "/users", json={"email": email or f"{uuid.uuid4().hex[:10]}@example.com", **extra}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def create_key(gw: Gateway, user_id: str, **extra: Any) -> dict[str, Any]:
    response = await api(gw, "POST", "/keys", json={"user_id": user_id, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def chat(gw: Gateway, key: str, text: str = "hi [mock completion_tokens=3]", **extra: Any) -> Any:
    """One chat completion through the real openai SDK (async), raw response (headers and body)."""
    return await gw.openai(key).chat.completions.with_raw_response.create(
        model=extra.pop("model", "gpt-4o-mini"), messages=[{"role": "user", "content": text}], **extra
    )


# -- the CLI, in-process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        """The one JSON object of a successful command."""
        assert self.code == 0, self
        assert self.err == "", self
        lines = self.out.splitlines()
        assert len(lines) == 1, self
        obj = json.loads(lines[0])
        assert isinstance(obj, dict)
        return obj

    def error_line(self) -> str:
        """The one line of a refusal, without the `synapgate: error: ` prefix."""
        assert self.code != 0 and self.out == "", self
        lines = self.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("synapgate: error: "), self
        return lines[0][len("synapgate: error: ") :]

    def problems_as_bad_input(self, expect: str) -> list[str]:
        """What is wrong with this run as the refusal of bad input (empty when it is right)."""
        problems = []
        if self.code == 0:
            problems.append("exit code 0")
        if self.out != "":
            problems.append(f"stdout not empty: {self.out!r}")
        lines = self.err.splitlines()
        if len(lines) != 1 or not self.err.endswith("\n"):
            problems.append(f"stderr is not exactly one line: {self.err!r}")
        elif not lines[0].startswith("synapgate"):
            problems.append(f"stderr does not start with 'synapgate': {self.err!r}")
        if expect not in self.err:
            problems.append(f"stderr does not say {expect!r}: {self.err!r}")
        if "Traceback" in self.err:
            problems.append("a traceback")
        return problems


def cli_env(database_url: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the machine minus every SYNAPGATE_* and provider key, plus the test's own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("SYNAPGATE_") and k.upper() not in PROVIDER_KEY_VARIABLES
    }
    env["TIKTOKEN_CACHE_DIR"] = str(SHARED_TIKTOKEN)
    if database_url is not None:
        env["SYNAPGATE_DATABASE_URL"] = database_url
    env.update(extra or {})
    return env


_CLI_LOCK = threading.Lock()  # one command at a time: the environment, cwd and std streams are the process's


def _run_main(args: tuple[str, ...]) -> int:
    from gateway.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def cli(
    database_url: str | None,
    *args: str,
    stdin: str = "",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Run:
    """`synapgate ARGS` through `gateway.cli.main`, in this process (own thread: it calls asyncio.run)."""
    out, err = io.StringIO(), io.StringIO()
    with _CLI_LOCK:
        saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
        os.environ.clear()
        os.environ.update(cli_env(database_url, env))
        os.chdir(cwd or REPO)
        sys.stdin = io.StringIO(stdin)
        try:
            with redirect_stdout(out), redirect_stderr(err), ThreadPoolExecutor(1) as pool:
                code = pool.submit(_run_main, tuple(args)).result()
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)
            sys.stdin = saved_stdin
    return Run(tuple(args), code, out.getvalue(), err.getvalue())


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def completion_record(user_id: uuid.UUID, charged: int, **fields: Any) -> CompletionRecord:
    """A successful gpt-4o-mini completion of `user_id` charged `charged` nano-USD, recorded now (a fresh
    request, conversation and message id each time); `fields` replace any of its values."""
    rec = CompletionRecord(
        request_id=f"req_{uuid.uuid4().hex}",
        user_id=user_id,
        workspace_id=None,
        api_key_id=None,
        conversation_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        llm_id=1,
        model="gpt-4o-mini",
        provider="openai",
        price_version=1,
        usage=Usage(prompt_tokens=10, completion_tokens=5),
        cost_nano=charged,
        charged_nano=charged,
        byok=False,
        is_stream=False,
        status="success",
        latency_ms=5,
        created_at=utcnow(),
    )
    return replace(rec, **fields)


def wait_for_fresh_window(margin: float = 12.0) -> None:
    """Start a minute-window test early enough in the minute that it cannot straddle two windows."""
    into = time.time() % 60
    if into > 60 - margin:
        time.sleep(60 - into + 0.2)


async def worst_case_nano(
    gw: Gateway, messages: list[dict[str, str]], max_tokens: int, model: str = "gpt-4o-mini"
) -> int:
    """What the gateway reserves for a request: its prompt counted, `max_tokens` out, at catalog prices."""
    async with gw.engine.connect() as conn:
        entry = (await load_catalog(conn)).get(model)
    assert entry is not None
    prompt, _ = count_prompt_tokens(entry.upstream_model, messages)
    return reservation_nano(entry, prompt, max_tokens)


FIELD_OF = {
    "user_id": lambda r: r.user_id,
    "workspace_id": lambda r: r.workspace_id,
    "api_key_id": lambda r: r.api_key_id,
    "model": lambda r: r.model,
    "user_api_key_used": lambda r: r.byok,
}


def by_hand(
    records: list[CompletionRecord], window: Window, filters: UsageFilters, keys: list[str]
) -> dict[tuple[Any, ...], Sums]:
    """The same totals summed in Python from the records themselves."""
    out: dict[tuple[Any, ...], Sums] = defaultdict(Sums)
    for r in records:
        if (window.start is not None and r.created_at < window.start) or (
            window.end is not None and r.created_at >= window.end
        ):
            continue
        wanted = {
            "user_id": r.user_id,
            "workspace_id": r.workspace_id,
            "model": r.model,
            "api_key_id": r.api_key_id,
        }
        if any(wanted[k] != v for k, v in filters.columns().items()):
            continue
        ok = r.status == "success"
        s = Sums(
            requests=1,
            errors=int(r.status == "error"),
            cancelled=int(r.status == "cancelled"),
            input_tokens=r.usage.prompt_tokens,
            cached_input_tokens=r.usage.cached_tokens,
            cache_write_tokens=r.usage.cache_write_tokens,
            output_tokens=r.usage.completion_tokens,
            reasoning_tokens=r.usage.reasoning_tokens,
            cost_nano=r.cost_nano,
            charged_nano=r.charged_nano,
            success_output_tokens=r.usage.completion_tokens if ok else 0,
            success_latency_ms_sum=r.latency_ms if ok else 0,
        )
        out[tuple(FIELD_OF[k](r) for k in keys)].add(s)
    return dict(out)
