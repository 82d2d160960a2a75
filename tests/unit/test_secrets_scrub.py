"""No key reaches a client or a log line, even when a provider's error message echoes it (issue 10)."""

from __future__ import annotations

import json

import pytest

from gateway.secrets_scrub import redact, scrub, scrub_value

# Real-looking keys (random, never valid): the shapes each provider issues today.
OPENAI_LEGACY = "sk-4tQeZ1vXbN8mR2kLp9sW3T3BlbkFJyH6cD0fGaU5oIeMnVx7"
OPENAI_PROJECT = (
    "sk-proj-Xy7_kP2mQ9rT4vW1zB8nC5dF3gH6jK0lM-aS2eR5tY8uI1oP4qW7eR0tY3uI6oP9aS2dF5gH8jK1lZ4xC7vB0nM3q"
)
ANTHROPIC = (
    "sk-ant-api03-Zq8Wm3Nx7Rb2Tc5Vd9Fg1Hj4Kl6Mp0Qs8Wt3Yv7Bx2Nz5Cr9Df1Gh4Jk6Lm0Pq8St3Vw7Xy2Az5Bc9De1-AbCdEfAA"
)
GOOGLE = "AIzaSyD4x9Km2Lp7Qr3Tv8Wn1Yb6Zc0Fh5Jg-aB"
XAI = "xai-8Hk2Lm9Np4Qr7St1Vw5Xy3Za6Bc0De8Fg2Hj5Kl9Mn4Pq7Rs1Tu3Vw6Xy0Za"
GROQ = "gsk_3Fh7Jk2Lm9Np4Qr8St1Vw6Xy5Za0Bc3De7Fg2Hj9Kl4Mn"
SYNAPGATE = "sk-sg-9c1f4b7a2e8d5c3b6a0f9e2d7c4b1a8e5f3d6c9b2a7e4f1d8c5b"
ALL = [OPENAI_LEGACY, OPENAI_PROJECT, ANTHROPIC, GOOGLE, XAI, GROQ, SYNAPGATE]


@pytest.mark.parametrize(
    "key", ALL, ids=["openai", "openai-proj", "anthropic", "google", "xai", "groq", "sg"]
)
def test_every_provider_key_shape_is_redacted_without_being_known(key: str) -> None:
    text = f"Incorrect API key provided: {key}. You can find your API key at https://platform.example.com."
    scrubbed = scrub(text)
    assert key not in scrubbed
    assert key[:-4] not in scrubbed  # at most the last four characters survive
    assert scrubbed == (
        f"Incorrect API key provided: [redacted…{key[-4:]}]. "
        "You can find your API key at https://platform.example.com."
    )


@pytest.mark.parametrize("key", ALL)
def test_keys_at_the_ends_of_a_string(key: str) -> None:
    assert scrub(key) == f"[redacted…{key[-4:]}]"
    assert scrub(f"{key}\n") == f"[redacted…{key[-4:]}]\n"
    assert scrub(f"key:{key}") == f"key:[redacted…{key[-4:]}]"
    assert scrub(f'"{key}"') == f'"[redacted…{key[-4:]}]"'


def test_a_known_secret_of_any_shape_is_redacted() -> None:
    sent = "platform-gemini-Qw3rTy-9a8b7c6d"  # the credential the gateway sent; no provider prefix
    text = f"API key not valid. Please pass a valid API key. (key={sent}; again: {sent})"
    tail = f"[redacted…{sent[-4:]}]"
    expected = f"API key not valid. Please pass a valid API key. (key={tail}; again: {tail})"
    assert scrub(text, [sent]) == expected
    assert sent not in scrub(text, [sent])
    assert sent in scrub(text)  # unknown and not key-shaped: left alone (that is what `known` is for)


def test_a_short_known_secret_keeps_no_tail() -> None:
    assert scrub("the key was hunter22!", ["hunter22"]) == "the key was [redacted]!"
    assert redact("hunter22") == "[redacted]"
    assert redact(OPENAI_LEGACY) == f"[redacted…{OPENAI_LEGACY[-4:]}]"


def test_a_known_secret_split_by_json_escaping() -> None:
    sent = "tok/Abc-123+xyz/987654321"
    escaped_slash = sent.replace("/", "\\/")  # PHP-style encoders escape every slash
    escaped_dash = sent.replace("-", "\\u002d").replace("+", "\\u002B")
    for form in (escaped_slash, escaped_dash):
        body = '{"error": {"message": "invalid token ' + form + '"}}'
        scrubbed = scrub(body, [sent])
        assert "987654321" not in scrubbed.replace(sent[-4:], ""), scrubbed
        assert scrubbed == '{"error": {"message": "invalid token [redacted…4321]"}}'


def test_shaped_keys_split_by_json_escaping_and_double_encoding() -> None:
    escaped = OPENAI_PROJECT.replace("-", "\\u002d")
    assert (
        scrub(f'{{"message": "bad key {escaped}"}}')
        == f'{{"message": "bad key [redacted…{OPENAI_PROJECT[-4:]}]"}}'
    )
    # a provider error body that is itself a JSON string inside another JSON document
    inner = json.dumps({"error": {"message": f"Invalid key {ANTHROPIC}"}})
    outer = json.dumps({"detail": inner})
    assert ANTHROPIC not in scrub(outer)
    assert ANTHROPIC[:-4] not in json.loads(json.loads(scrub(outer))["detail"])["error"]["message"]
    # a key right after an escaped newline is still a key
    assert scrub(f'"line one\\n{GROQ}"') == f'"line one\\n[redacted…{GROQ[-4:]}]"'


def test_bearer_tokens_in_text() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLXZhbHVl"
    scrubbed = scrub(f"upstream rejected header Authorization: Bearer {token} (expired)")
    assert token not in scrubbed
    assert scrubbed == "upstream rejected header Authorization: Bearer [redacted…dWVl] (expired)".replace(
        "dWVl", token[-4:]
    )
    assert (
        scrub(f"authorization: bearer {OPENAI_LEGACY}")
        == f"authorization: bearer [redacted…{OPENAI_LEGACY[-4:]}]"
    )


@pytest.mark.parametrize(
    "text",
    [
        "task-based routing",
        "a sketch of the risk-assessment",
        "sk-learn-compatible-pipelines-everywhere",  # key-shaped but no digit: a word, not a key
        "Use the disk-based cache; ask-me-anything",
        "The AIzawa report and the xai-team meeting, gsk_short",
        "Bearer of bad news",
        "desk-1234567890 is an asset tag",  # not at a word start
        "https://api.example.com/v1/chat/completions?model=gpt-4o",
        "",
    ],
)
def test_no_false_positives_on_ordinary_text(text: str) -> None:
    assert scrub(text) == text
    assert scrub(text, ["unrelated-secret-value-123"]) == text


def test_scrub_value_walks_json_like_structures() -> None:
    sent = "byok-user-credential-00042"
    value = {
        "error": {
            "message": f"Incorrect API key provided: {OPENAI_PROJECT}",
            "details": [f"retry with a key other than {sent}", 42, None, True, {"nested": (GOOGLE, 1.5)}],
            sent: "the key itself as a mapping key",
        },
        "status": 401,
    }
    scrubbed = scrub_value(value, [sent])
    dumped = json.dumps(scrubbed)
    for secret in (OPENAI_PROJECT, sent, GOOGLE):
        assert secret not in dumped
        assert secret[:-4] not in dumped
    assert scrubbed["status"] == 401
    assert scrubbed["error"]["details"][1:4] == [42, None, True]
    assert scrubbed["error"]["details"][4]["nested"] == (f"[redacted…{GOOGLE[-4:]}]", 1.5)
    assert scrubbed["error"]["[redacted…0042]"] == "the key itself as a mapping key"
    assert value["error"]["message"].endswith(OPENAI_PROJECT)  # the input is not mutated


def test_generators_of_known_secrets_are_used_for_every_string() -> None:
    sent = "custom-secret-token-abcdef"
    scrubbed = scrub_value(["a " + sent, "b " + sent], (s for s in [sent]))
    assert scrubbed == ["a [redacted…cdef]", "b [redacted…cdef]"]
