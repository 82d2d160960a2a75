"""Structured output and the stream helper through SynapGate, with the real openai SDK and the mock upstream.

- `client.chat.completions.parse(response_format=PydanticModel)` works for Claude (a forced tool) and Gemini
  (responseSchema), and for OpenAI (passed through): the SDK validates the content into the model.
- `client.chat.completions.stream(...)` emits `content.done` and `tool_calls.function.arguments.done` on
  every provider: each stream ends like OpenAI's (last delta, a finish-only chunk, usage, [DONE]).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import openai
import pytest
from pydantic import BaseModel

from devtools.mock_upstream import TOOL_ARGUMENTS, reply_text
from tests.integration.conftest import Gateway

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

MODELS = ["claude-3-haiku", "gemini-1.5-flash", "gpt-4o-mini", "deepseek-chat", "grok-2", "llama-3.1-405b"]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


class Wind(BaseModel):
    speed: float
    direction: Literal["N", "S", "E", "W"]


class Weather(BaseModel):
    city: str
    temp_c: int
    wind: Wind
    note: str | None
    tags: list[str]


def sdk(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


@pytest.mark.parametrize("model", ["claude-3-haiku", "gemini-1.5-flash", "gpt-4o-mini"])
async def test_parse_returns_the_pydantic_model(gateway: Gateway, model: str) -> None:
    _user, key = await gateway.seed_user("5")
    client = sdk(gateway, key)
    completion = client.chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "Weather in Paris?"}], response_format=Weather
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    parsed = choice.message.parsed
    assert isinstance(parsed, Weather) and isinstance(parsed.wind, Wind)
    assert parsed == Weather.model_validate_json(choice.message.content or "")

    seen = gateway.mock.app.requests[-1].body
    if model.startswith("claude"):
        (tool,) = seen["tools"]
        assert seen["tool_choice"] == {"type": "tool", "name": tool["name"]}
        assert tool["input_schema"]["properties"].keys() == Weather.model_fields.keys()
    elif model.startswith("gemini"):
        config = seen["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseSchema"]["propertyOrdering"] == list(Weather.model_fields)
        assert config["responseSchema"]["properties"]["wind"]["type"] == "OBJECT"  # $ref inlined
    else:
        assert seen["response_format"]["type"] == "json_schema"

    # Streamed, the helper assembles the same object.
    with client.chat.completions.stream(
        model=model, messages=[{"role": "user", "content": "Weather?"}], response_format=Weather
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "content.done" in kinds
    assert isinstance(final.choices[0].message.parsed, Weather)
    rows = await gateway.rows("SELECT status, output_tokens FROM usage_logs ORDER BY created_at")
    assert [r[0] for r in rows] == ["success", "success"]


async def test_a_field_claude_cannot_honour_is_a_400_naming_it(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("5")
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway, key).chat.completions.create(
            model="claude-3-haiku", messages=[{"role": "user", "content": "hi"}], seed=7
        )
    assert err.value.status_code == 400
    body: Any = err.value.body
    assert body["param"] == "seed" and body["code"] == "unsupported_parameter"
    assert len(gateway.mock.app.requests) == 0  # nothing went upstream


@pytest.mark.parametrize("model", MODELS)
async def test_stream_helper_emits_done_events_on_every_provider(gateway: Gateway, model: str) -> None:
    _user, key = await gateway.seed_user("5")
    client = sdk(gateway, key)
    with client.chat.completions.stream(
        model=model, messages=[{"role": "user", "content": "Hello"}], stream_options={"include_usage": True}
    ) as stream:
        done = [e for e in stream if e.type == "content.done"]
        final = stream.get_final_completion()
    assert len(done) == 1 and done[0].content == reply_text(8)  # type: ignore[union-attr]
    assert final.choices[0].finish_reason == "stop" and final.usage is not None

    with client.chat.completions.stream(
        model=model, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS
    ) as stream:
        args_done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert len(args_done) == 1
    event: Any = args_done[0]
    assert event.name == "get_weather" and json.loads(event.arguments) == json.loads(TOOL_ARGUMENTS)
    assert final.choices[0].finish_reason == "tool_calls"
