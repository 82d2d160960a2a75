"""Token counting: encodings per model, counts equal to tiktoken's, and the offline bytes/4 fallback.

tests/conftest.py points TIKTOKEN_CACHE_DIR at ../shared/tiktoken (the two shipped encodings). The
offline tests point it at an empty (or corrupt) folder and prove no socket is ever opened.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import math
import os
import socket
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.registry

from pricing.tokens import (
    ANTHROPIC_SERVER_TOOL_TOKENS,
    ANTHROPIC_THINKING_TOKENS,
    ANTHROPIC_TOOL_SYSTEM_TOKENS,
    IMAGE_TOKENS_ESTIMATE,
    OPENAI_TOOLS_PREAMBLE_TOKENS,
    PROVIDER_SAFETY_FACTORS,
    anthropic_image_tokens,
    count_completion_tokens,
    count_prompt_tokens,
    counter_for_encoding,
    counter_for_model,
    data_url_image_size,
    encoding_is_cached,
    encoding_name_for,
    gemini_image_tokens,
    image_size,
    image_tokens,
    openai_image_tokens,
    preamble_tokens,
    safety_factor,
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


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_counts_are_unchanged_once_the_python_ranks_are_freed(encoding: str) -> None:
    """The counter frees tiktoken's Python dict of ranks (its Rust copy encodes): counts equal those of a
    freshly built Encoding that still holds it."""
    counter = counter_for_encoding(encoding)
    assert counter._encoder is not None and counter._encoder._mergeable_ranks == {}  # type: ignore[attr-defined]
    fresh = tiktoken.Encoding(**tiktoken.registry.ENCODING_CONSTRUCTORS[encoding]())
    assert len(fresh._mergeable_ranks) > 100_000
    mixed = "".join(TEXTS) + " naïve café — 東京 🚀 <|endoftext|> \u0000 " + "x" * 5000
    for text in [*TEXTS, mixed]:
        assert counter.count(text) == len(fresh.encode_ordinary(text)), text


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


# -- honest estimates by provider (issue 10) ---------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def _calibration() -> Any:
    """bench/estimate_calibration.py, the one mapping of recorded fixtures to the estimator's inputs."""
    spec = importlib.util.spec_from_file_location(
        "estimate_calibration", REPO / "bench" / "estimate_calibration.py"
    )
    assert spec is not None and spec.loader is not None
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _fixture_cases() -> list[Any]:
    if not (SHARED / "fixtures").is_dir():
        return []
    return list(_calibration().load_cases(SHARED))


FIXTURE_CASES = _fixture_cases()


@pytest.mark.skipif(not FIXTURE_CASES, reason=f"recorded provider fixtures not found under {SHARED}")
@pytest.mark.parametrize("case", FIXTURE_CASES, ids=[c.name for c in FIXTURE_CASES])
def test_the_estimate_covers_what_the_provider_reported(case: Any) -> None:
    estimate = case.estimate()
    assert estimate >= case.reported, f"{case.name}: estimated {estimate} < reported {case.reported}"


@pytest.mark.skipif(not FIXTURE_CASES, reason=f"recorded provider fixtures not found under {SHARED}")
def test_every_fixture_with_a_request_and_a_count_is_measured() -> None:
    calibration = _calibration()
    measured = {c.name for c in FIXTURE_CASES}
    assert len(measured) >= 35
    assert {c.provider for c in FIXTURE_CASES} >= {"openai", "anthropic", "gemini", "deepseek"}
    for folder in ("fixtures", "fixtures-apis"):
        for request in (SHARED / folder).glob("*/*.request.json"):
            stem = request.name.removesuffix(".request.json")
            name = f"{folder}/{request.parent.name}/{stem}"
            responses = [request.with_name(stem + s) for s in (".json", ".sse", ".chunks.jsonl")]
            reported = [calibration.reported_input_tokens(p) for p in responses if p.exists()]
            # left out only when the provider reported no input count (errors, a stream cut by an error)
            assert (name in measured) == any(r is not None for r in reported), name


def test_the_raw_table_is_what_the_factors_were_chosen_from() -> None:
    """Each factor is at least the worst raw ratio of its provider, and never below 1."""
    if not FIXTURE_CASES:
        pytest.skip(f"recorded provider fixtures not found under {SHARED}")
    calibration = _calibration()
    with calibration.raw_factors():
        table = calibration.ratio_table(FIXTURE_CASES)
    assert set(table) == {"anthropic", "deepseek", "gemini", "openai"}
    for provider, (_n, _low, _median, high) in table.items():
        assert safety_factor(provider) >= max(Decimal(1), Decimal(str(high))), (provider, high)
    assert safety_factor("openai") == 1  # OpenAI's tokenizer is tiktoken's: its text is counted exactly


@pytest.mark.parametrize(
    ("width", "height", "detail", "tokens"),
    [
        (4000, 3000, "low", 85),
        (512, 512, "high", 85 + 170),
        (1024, 1024, "high", 85 + 170 * 4),  # short side 768: 768x768, 2x2 tiles
        (2048, 4096, "auto", 85 + 170 * 6),  # fit 1024x2048, then 768x1536: 2x3 tiles
        (2048, 768, "high", 85 + 170 * 8),  # the worst case
        (100, 5000, "high", 85 + 170 * 4),  # fit 41x2048: 1x4 tiles
    ],
)
def test_openai_image_rule(width: int, height: int, detail: str, tokens: int) -> None:
    assert openai_image_tokens(width, height, detail) == tokens


def test_image_rules_of_anthropic_and_gemini_and_unknown_sizes() -> None:
    assert anthropic_image_tokens(1000, 1000) == 1334
    assert anthropic_image_tokens(200, 200) == 54
    assert anthropic_image_tokens(4000, 3000) == 1600
    assert gemini_image_tokens(384, 300) == 258
    assert gemini_image_tokens(1000, 1000) == 258 * 4
    assert image_tokens("openai", None) == 85 + 170 * 8 == image_tokens("xai", None)
    assert image_tokens("openai", None, "low") == 85
    assert image_tokens("anthropic", None) == 1600
    assert image_tokens("gemini", None) == 258
    assert image_tokens("Anthropic", (1000, 1000)) == 1334


def _png(width: int, height: int) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n"
        + b"\x00\x00\x00\rIHDR"
        + width.to_bytes(4, "big")
        + height.to_bytes(4, "big")
        + b"\x08\x02"
    )


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = (
        b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03" + b"\x00" * 9
    )
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (_png(640, 480), (640, 480)),
        (b"GIF89a" + (300).to_bytes(2, "little") + (200).to_bytes(2, "little") + b"\x00" * 8, (300, 200)),
        (_jpeg(1920, 1080), (1920, 1080)),
        (
            b"RIFF\x00\x00\x00\x00WEBPVP8X"
            + b"\x0a\x00\x00\x00"
            + b"\x00" * 4
            + (799).to_bytes(3, "little")
            + (599).to_bytes(3, "little"),
            (800, 600),
        ),
        (b"not an image at all, just some bytes", None),
        (b"\xff\xd8\xff", None),
    ],
    ids=["png", "gif", "jpeg", "webp", "unknown", "truncated-jpeg"],
)
def test_image_size_from_the_first_bytes(data: bytes, size: tuple[int, int] | None) -> None:
    assert image_size(data) == size


def test_an_inlined_image_is_priced_by_its_real_size() -> None:
    url = "data:image/png;base64," + base64.b64encode(_png(512, 512) + b"\x00" * 5000).decode()
    assert data_url_image_size(url) == (512, 512)
    assert data_url_image_size("https://example.com/cat.png") is None
    assert data_url_image_size("data:image/png;base64,!!!not-base64!!!") is None

    def image_message(image_url: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "image_url", "image_url": image_url}]}]

    text_only = count_prompt_tokens("gpt-4o", [{"role": "user", "content": []}], provider="openai")[0]
    small = count_prompt_tokens("gpt-4o", image_message({"url": url}), provider="openai")[0]
    remote = count_prompt_tokens("gpt-4o", image_message({"url": "https://x.test/a.png"}), provider="openai")[
        0
    ]
    low = count_prompt_tokens(
        "gpt-4o", image_message({"url": "https://x.test/a.png", "detail": "low"}), provider="openai"
    )[0]
    assert (small - text_only, remote - text_only, low - text_only) == (255, 1445, 85)
    anthropic_block = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": url.split(",")[1]},
    }
    claude = count_prompt_tokens(
        "claude-3-haiku", [{"role": "user", "content": [anthropic_block]}], provider="anthropic"
    )[0]
    claude_empty = count_prompt_tokens(
        "claude-3-haiku", [{"role": "user", "content": []}], provider="anthropic"
    )[0]
    assert claude - claude_empty == math.ceil(512 * 512 / 750)
    # without a provider the chat path keeps today's fixed estimate
    legacy = count_prompt_tokens("gpt-4o", image_message({"url": url}))[0]
    assert (
        legacy - count_prompt_tokens("gpt-4o", [{"role": "user", "content": []}])[0] == IMAGE_TOKENS_ESTIMATE
    )


def test_tools_schemas_preambles_and_safety_factors() -> None:
    enc = tiktoken.get_encoding("cl100k_base")
    messages = [
        {"role": "user", "content": "What is the weather in Paris today, and should I take an umbrella?"}
    ]
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}
    base = count_prompt_tokens("claude-3-haiku", messages)[0]
    assert count_prompt_tokens("claude-3-haiku", messages, response_format=schema)[0] == base + _n(
        enc, json.dumps(schema, separators=(",", ":"))
    )
    factor = safety_factor("anthropic")
    assert factor > 1
    claude = count_prompt_tokens("claude-3-haiku", messages, provider="anthropic")[0]
    assert claude == math.ceil(base * factor)
    tools_text = base + _n(enc, json.dumps(tools, separators=(",", ":")))
    with_tools = count_prompt_tokens("claude-3-haiku", messages, tools, provider="anthropic")[0]
    assert with_tools == math.ceil(tools_text * factor) + ANTHROPIC_TOOL_SYSTEM_TOKENS
    server = [*tools, {"type": "web_search_20250305", "name": "web_search"}]
    server_text = base + _n(enc, json.dumps(server, separators=(",", ":")))
    with_server = count_prompt_tokens(
        "claude-3-haiku", messages, server, provider="anthropic", thinking=True
    )[0]
    expected = math.ceil(server_text * factor) + ANTHROPIC_TOOL_SYSTEM_TOKENS + ANTHROPIC_SERVER_TOOL_TOKENS
    assert with_server == expected + ANTHROPIC_THINKING_TOKENS
    # OpenAI: text exact (factor 1), plus the tools preamble when tools are offered
    o200k = tiktoken.get_encoding("o200k_base")
    openai_tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    plain = count_prompt_tokens("gpt-4o", messages)[0]
    assert count_prompt_tokens("gpt-4o", messages, provider="openai")[0] == plain
    assert count_prompt_tokens("gpt-4o", messages, openai_tools, provider="openai")[0] == (
        plain + _n(o200k, json.dumps(openai_tools, separators=(",", ":"))) + OPENAI_TOOLS_PREAMBLE_TOKENS
    )
    assert preamble_tokens("gemini", openai_tools, thinking=True) == 0
    # an unknown provider gets the largest factor
    assert safety_factor("someone-new") == max(PROVIDER_SAFETY_FACTORS.values())


def test_a_video_of_unknown_length_is_reserved_for_the_assumed_duration() -> None:
    video = {"type": "video_url", "video_url": {"url": "https://m.youtube.com/watch?v=x"}}
    with_video = count_prompt_tokens(
        "gemini-2.5-flash", [{"role": "user", "content": [video]}], provider="gemini"
    )[0]
    without = count_prompt_tokens("gemini-2.5-flash", [{"role": "user", "content": []}], provider="gemini")[0]
    assert with_video - without == (263 + 32) * 300
