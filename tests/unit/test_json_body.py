"""Hostile request bodies get a 400 that says what is wrong, never a 500 (issue 10)."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import pytest

from gateway.api.json_body import decode_object
from gateway.errors import GatewayError


def _refused(body: bytes, **kwargs: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        decode_object(body, **kwargs)
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"
    return caught.value


def test_an_ordinary_object_is_decoded() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    assert decode_object(json.dumps(body).encode()) == body


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{}", b'{"a": "caf\xe9"}', b'{"a": "\xed\xa0\x80"}', b'{"a": "\xc3"}'],
    ids=["bom-like", "latin1", "surrogate", "truncated"],
)
def test_invalid_utf8_is_named(body: bytes) -> None:
    assert "not valid UTF-8" in _refused(body).message


@pytest.mark.parametrize("body", [b"", b"{", b"{'a': 1}", b'{"a": 1,}', b"nul", b'{"a": 1} x', b"\x00"])
def test_not_json(body: bytes) -> None:
    assert "not valid JSON" in _refused(body).message


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"[]", "an array"),
        (b'"x"', "a string"),
        (b"1", "a number"),
        (b"null", "null"),
        (b"true", "a boolean"),
    ],
)
def test_the_top_level_must_be_an_object(body: bytes, kind: str) -> None:
    assert _refused(body).message == f"The request body must be a JSON object, not {kind}."


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"a": ' + b'{"b": ' * 10_000 + b"1" + b"}" * 10_000 + b"}",
        b"[" * 10_000 + b"]" * 10_000,
        b"[" * 10_000,  # never closed: still refused for depth, before any decoder recurses
        b'{"a": ' + b"[{" * 5_000 + b'"x": 1' + b"}]" * 5_000 + b"}",
    ],
    ids=["arrays", "objects", "top-level-array", "unclosed", "mixed"],
)
def test_ten_thousand_deep_is_refused_without_recursion(body: bytes) -> None:
    # the decoder itself would recurse: prove the body really is hostile
    with pytest.raises((RecursionError, msgspec.DecodeError)):
        msgspec.json.decode(body)
    assert "deeper than 64 levels" in _refused(body).message


def _nested(depth: int) -> bytes:
    return b'{"a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_depth_limit_is_exact() -> None:
    assert decode_object(_nested(64))["a"] is not None
    _refused(_nested(65))
    assert decode_object(_nested(3), max_depth=3) == {"a": [[]]}
    _refused(_nested(4), max_depth=3)


def test_brackets_and_escaped_quotes_inside_strings_do_not_count() -> None:
    text = '[[[[{{{{ \\" ]]]] \\\\" + "' * 2_000  # many brackets and escaped quotes, all inside strings
    body = {"content": "[" * 5_000 + '"\\' + "{" * 5_000, "more": [text, {"k[": '}]"'}]}
    raw = json.dumps(body).encode()
    assert decode_object(raw) == body
    # a string ending in an escaped backslash must close the string: the bracket after it counts
    assert decode_object(b'{"a": "x\\\\", "b": [[1]]}', max_depth=3) == {"a": "x\\", "b": [[1]]}
    _refused(b'{"a": "x\\\\", "b": [[1]]}', max_depth=2)


@pytest.mark.parametrize(
    "literal",
    ["9223372036854775808", "-9223372036854775809", "18446744073709551616", "1" * 25],
)
def test_integers_beyond_64_bits_are_refused(literal: str) -> None:
    message = _refused(f'{{"max_tokens": {literal}}}'.encode()).message
    assert literal in message
    assert "64 bits" in message


def test_integers_with_too_many_digits_are_refused_before_decoding() -> None:
    message = _refused(b'{"n": [' + b"7" * 5_000 + b"]}").message
    assert "more than 30 digits" in message
    assert "digits" in _refused(b'{"n": -' + b"1" * 31 + b"}").message
    assert "more than 5 digits" in _refused(b'{"n": 123456}', max_int_digits=5).message


def test_large_numbers_that_are_fine_pass() -> None:
    body = (
        b'{"a": 9223372036854775807, "b": -9223372036854775808, "c": 1.00000000000000000000000000000000001,'
        b' "d": 1e-123456789012345678901234567890123, "e": "12345678901234567890123456789012345", "f": 10e30}'
    )
    decoded = decode_object(body)
    assert decoded["a"] == 2**63 - 1
    assert decoded["b"] == -(2**63)
    assert decoded["e"] == "12345678901234567890123456789012345"


def test_a_4mb_ordinary_body_is_fast() -> None:
    chunk = 'The quick brown fox [jumps] over {the} lazy dog "quoted" 12345. '
    messages = [{"role": "user", "content": chunk * 620} for _ in range(100)]
    raw = json.dumps({"model": "gpt-4o", "messages": messages, "max_tokens": 1000}).encode()
    assert len(raw) > 4_000_000
    started = time.perf_counter()
    decoded = decode_object(raw)
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"\ndecode_object of a {len(raw) / 1e6:.1f} MB body: {elapsed_ms:.1f} ms")
    assert len(decoded["messages"]) == 100
    assert elapsed_ms < 2000  # a generous sanity bound; the printed figure is the measurement
