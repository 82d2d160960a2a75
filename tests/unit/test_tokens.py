"""Token counting: encodings per model, counts equal to tiktoken's, and the offline bytes/4 fallback.

tests/conftest.py points TIKTOKEN_CACHE_DIR at ../shared/tiktoken (the two shipped encodings). The
offline tests point it at an empty (or corrupt) folder and prove no socket is ever opened.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.registry

from pricing.tokens import (
    IMAGE_TOKENS_ESTIMATE,
    count_completion_tokens,
    count_prompt_tokens,
    counter_for_encoding,
    counter_for_model,
    encoding_is_cached,
    encoding_name_for,
)

SHARED_TIKTOKEN = Path(__file__).resolve().parents[3] / "shared" / "tiktoken"

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. " * 20,
    "héllo wörld — naïve café, 東京は晴れです 🚀🔥👍🏽",
    "def f(x):\n    return {'a': [1, 2, 3]}\n\n\tindent",
    "<|endoftext|> and <|im_start|> are plain text here",
    "   leading and trailing spaces   ",
    "1234567890 3.14159 -42 1e-10",
]


@pytest.fixture(autouse=True)
def _shared_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts (and ends) with the shipped cache and no memoised counters."""
    if not SHARED_TIKTOKEN.is_dir():
        pytest.skip(f"the shipped tiktoken encodings are not at {SHARED_TIKTOKEN}")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED_TIKTOKEN))
    counter_for_encoding.cache_clear()
    yield
    counter_for_encoding.cache_clear()


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every way out to the network raise, and record each attempt."""
    attempts: list[str] = []

    def refuse(name: str) -> Any:
        def _refuse(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
            raise OSError(f"test: network access refused ({name})")

        return _refuse

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


# -- encodings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o-2024-08-06",
        "GPT-4o",
        "chatgpt-4o-latest",
        "o1",
        "o1-mini",
        "o1-preview",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4.5-preview",
        "gpt-5",
        "openai/gpt-4o",
    ],
)
def test_o200k_models(model: str) -> None:
    assert encoding_name_for(model) == "o200k_base"


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4",
        "gpt-4-turbo",
        "gpt-4-0613",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-16k",
        "claude-3-opus",
        "claude-3-sonnet",
        "claude-3-haiku-20240307",
        "llama-3.1-405b",
        "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo",
        "gemini-1.5-pro",
        "grok-2",
        "deepseek-chat",
        "",
    ],
)
def test_cl100k_models(model: str) -> None:
    assert encoding_name_for(model) == "cl100k_base"


def test_shipped_encodings_are_seen_as_cached() -> None:
    assert encoding_is_cached("o200k_base") is True
    assert encoding_is_cached("cl100k_base") is True
    assert encoding_is_cached("p50k_base") is False  # not shipped


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_counts_match_tiktoken(encoding: str) -> None:
    counter = counter_for_encoding(encoding)
    assert counter.estimator == f"tiktoken:{encoding}"
    reference = tiktoken.get_encoding(encoding)
    for text in TEXTS:
        assert counter.count(text) == len(reference.encode_ordinary(text)), text
    assert counter.count("") == 0


def test_the_two_encodings_differ_where_expected() -> None:
    text = "東京は晴れです 🚀🔥👍🏽 " * 10
    o200k = counter_for_encoding("o200k_base").count(text)
    cl100k = counter_for_encoding("cl100k_base").count(text)
    assert o200k == len(tiktoken.get_encoding("o200k_base").encode_ordinary(text))
    assert cl100k == len(tiktoken.get_encoding("cl100k_base").encode_ordinary(text))
    assert o200k != cl100k


@pytest.mark.parametrize(
    ("model", "estimator"),
    [
        ("gpt-4o", "tiktoken:o200k_base"),
        ("o3-mini", "tiktoken:o200k_base"),
        ("gpt-4-turbo", "tiktoken:cl100k_base"),
        ("claude-3-haiku", "tiktoken:cl100k_base"),
        ("llama-3.1-405b", "tiktoken:cl100k_base"),
    ],
)
def test_estimator_names(model: str, estimator: str) -> None:
    assert counter_for_model(model).estimator == estimator
    tokens, name = count_completion_tokens(model, "Hello there, how are you?")
    assert name == estimator
    enc = tiktoken.get_encoding(estimator.split(":", 1)[1])
    assert tokens == len(enc.encode_ordinary("Hello there, how are you?"))


def test_counters_are_memoised_per_encoding() -> None:
    assert counter_for_encoding("o200k_base") is counter_for_encoding("o200k_base")
    assert counter_for_model("gpt-4o") is counter_for_model("o1-mini")
    assert counter_for_model("gpt-4o") is not counter_for_model("gpt-4")


# -- prompts -------------------------------------------------------------------------------------


def _n(enc: tiktoken.Encoding, text: str) -> int:
    return len(enc.encode_ordinary(text))


def test_count_prompt_tokens_plain_messages() -> None:
    enc = tiktoken.get_encoding("o200k_base")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    tokens, estimator = count_prompt_tokens("gpt-4o", messages)
    expected = 3 + sum(3 + _n(enc, m["role"]) + _n(enc, m["content"]) for m in messages)
    assert (tokens, estimator) == (expected, "tiktoken:o200k_base")
    assert count_prompt_tokens("gpt-4o", []) == (3, "tiktoken:o200k_base")


def test_count_prompt_tokens_with_image_name_tools_and_tool_calls() -> None:
    enc = tiktoken.get_encoding("cl100k_base")
    tool_calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    audio_part = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be helpful."},
        {
            "role": "user",
            "name": "alice",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "text", "text": "And this one?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                audio_part,
                "not a part",  # ignored
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": tool_calls},
        {"role": "tool", "content": "sunny, 21°C", "tool_call_id": "call_1"},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    tokens, estimator = count_prompt_tokens("claude-3-sonnet", messages, tools)
    expected = (
        3  # reply priming
        + (3 + _n(enc, "system") + _n(enc, "Be helpful."))
        + (
            3
            + _n(enc, "user")
            + _n(enc, "What is in this image?")
            + IMAGE_TOKENS_ESTIMATE
            + _n(enc, "And this one?")
            + IMAGE_TOKENS_ESTIMATE
            + _n(enc, json.dumps(audio_part, separators=(",", ":")))
            + 1
            + _n(enc, "alice")
        )
        + (3 + _n(enc, "assistant") + _n(enc, json.dumps(tool_calls, separators=(",", ":"))))
        + (3 + _n(enc, "tool") + _n(enc, "sunny, 21°C"))
        + _n(enc, json.dumps(tools, separators=(",", ":")))
    )
    assert estimator == "tiktoken:cl100k_base"
    assert tokens == expected
    assert IMAGE_TOKENS_ESTIMATE == 1105
    # each image adds exactly the fixed estimate
    fewer = [messages[0], {**messages[1], "content": messages[1]["content"][:1]}, *messages[2:]]
    tokens_without_images = count_prompt_tokens("claude-3-sonnet", fewer, tools)[0]
    dropped = 2 * IMAGE_TOKENS_ESTIMATE + _n(enc, "And this one?")
    dropped += _n(enc, json.dumps(audio_part, separators=(",", ":")))
    assert tokens - tokens_without_images == dropped


def test_count_prompt_tokens_tools_add_their_json() -> None:
    enc = tiktoken.get_encoding("o200k_base")
    messages = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    base, _ = count_prompt_tokens("gpt-4o-mini", messages)
    with_tools, _ = count_prompt_tokens("gpt-4o-mini", messages, tools)
    assert with_tools - base == _n(enc, json.dumps(tools, separators=(",", ":")))
    assert count_prompt_tokens("gpt-4o-mini", messages, [])[0] == base


# -- offline: no encoding in the cache, no network -----------------------------------------------


def test_missing_encoding_falls_back_to_bytes_over_4_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network_attempts: list[str]
) -> None:
    empty = tmp_path / "empty-tiktoken-cache"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    counter_for_encoding.cache_clear()

    assert encoding_is_cached("o200k_base") is False
    counter = counter_for_model("gpt-4o")
    assert counter.estimator == "bytes/4"
    assert counter.count("") == 0
    assert counter.count("abcd") == 1
    assert counter.count("abcde") == 2
    text = "héllo wörld 🚀"  # 18 UTF-8 bytes (é, ö: 2 each; the rocket: 4)
    assert len(text.encode()) == 18
    assert counter.count(text) == math.ceil(18 / 4) == 5

    tokens, estimator = count_prompt_tokens("claude-3-opus", [{"role": "user", "content": "abcd" * 3}])
    # 3 priming + 3 framing + "user" (1) + 12 bytes (3)
    assert (tokens, estimator) == (10, "bytes/4")
    assert count_completion_tokens("gpt-4o", "x" * 401) == (101, "bytes/4")
    assert list(empty.iterdir()) == []  # nothing downloaded into the cache
    assert network_attempts == []


def test_network_guard_really_blocks(network_attempts: list[str]) -> None:
    """The guard the offline tests rely on does catch a connection attempt."""
    with pytest.raises(OSError):
        socket.create_connection(("203.0.113.1", 443), timeout=0.1)
    assert len(network_attempts) == 1


def test_an_unset_cache_dir_that_is_empty_string_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert encoding_is_cached("o200k_base") is False


def test_corrupt_cached_encoding_falls_back_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network_attempts: list[str]
) -> None:
    cache = tmp_path / "corrupt-tiktoken-cache"
    cache.mkdir()
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    corrupt = cache / hashlib.sha1(url.encode()).hexdigest()
    corrupt.write_bytes(b"this is not a BPE file\n")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # make tiktoken really read the file
    counter_for_encoding.cache_clear()

    assert encoding_is_cached("cl100k_base") is False  # present, but its sha256 is wrong
    counter = counter_for_encoding("cl100k_base")
    assert counter.estimator == "bytes/4"
    assert counter.count("abcdefgh") == 2
    assert network_attempts == []  # tiktoken would delete the file and download it again
    assert corrupt.read_bytes() == b"this is not a BPE file\n"  # the operator's file is left alone


def test_tiktoken_cache_env_is_restored_for_other_tests() -> None:
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(SHARED_TIKTOKEN)
    assert counter_for_encoding("o200k_base").estimator == "tiktoken:o200k_base"
