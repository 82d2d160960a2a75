"""Decode a request body into a JSON object, refusing hostile bodies with a 400 instead of a 500.

Hostile means: bytes that are not UTF-8, text that is not JSON, nesting deep enough to exhaust a recursive
decoder (10,000 brackets is a 20 kB body), a top level that is not an object, and integers no 64-bit column
or counter can hold. The depth is measured before any decoder sees the body, without recursion: strings are
cut out and every other byte but brackets dropped (both in C, by `bytes` methods), then the
innermost `[]`/`{}` pairs are removed one level per pass, at most `max_depth` passes.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from gateway.errors import GatewayError, bad_request

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_BRACKETS_ONLY = bytes(range(256)).translate(None, b"[]{}")
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")
# An integer literal: digits not part of a fraction or an exponent (those make it a float).
_LONG_INTEGER = r"(?<![\d.eE+-])-?\d{{{n},}}(?![\d.eE])"


def decode_object(body: bytes, *, max_depth: int = 64, max_int_digits: int = 30) -> dict[str, Any]:
    """The body as a JSON object; a hostile or malformed body raises the gateway's 400 saying why."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"The request body is not valid UTF-8 (invalid byte at position {exc.start}); "
            "send JSON encoded as UTF-8."
        ) from None
    skeleton = _without_strings(body)
    depth_error = _too_deep(skeleton, max_depth)
    if depth_error is not None:
        raise depth_error
    int64_candidates = _check_integer_literals(skeleton, max_int_digits)
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise bad_request(
            f"The request body must be a JSON object, not {_json_kind(value)}.",
        )
    if int64_candidates:
        _check_int64(value)
    return value


def _without_strings(body: bytes) -> bytes:
    """The body with every string's content cut out (`""` stays), all in C.

    Outside strings JSON has no backslash, so dropping escaped backslashes (pairs, left to right, as a parser
    reads them) and then escaped quotes leaves only the quotes that open and close strings.
    """
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b'""'.join(unescaped.split(b'"')[::2])


def _too_deep(skeleton: bytes, max_depth: int) -> GatewayError | None:
    """A 400 when brackets (outside strings) nest deeper than `max_depth`, else None. Never recurses."""
    brackets = skeleton.translate(None, _BRACKETS_ONLY)
    if brackets.count(b"[") + brackets.count(b"{") <= max_depth:
        return None  # not enough opening brackets to nest that deep
    for _ in range(max_depth):
        reduced = _INNERMOST_PAIR.sub(b"", brackets)
        if reduced == brackets:
            break
        brackets = reduced
    # Pairs left after max_depth passes nest deeper than that; so do more unclosed openers than max_depth.
    unclosed = brackets.count(b"[") + brackets.count(b"{")
    if _INNERMOST_PAIR.search(brackets) is not None or unclosed > max_depth:
        return bad_request(f"The request body nests arrays/objects deeper than {max_depth} levels.")
    return None


def _check_integer_literals(skeleton: bytes, max_int_digits: int) -> bool:
    """Refuse integers longer than `max_int_digits` digits; True if some may exceed 64 bits."""
    too_long = re.search(_LONG_INTEGER.format(n=max_int_digits + 1).encode(), skeleton)
    if too_long is not None:
        raise bad_request(
            f"The request body holds an integer of more than {max_int_digits} digits "
            f"({too_long.group()[:12].decode()}…); integers must fit in 64 bits."
        )
    return re.search(_LONG_INTEGER.format(n=19).encode(), skeleton) is not None


def _check_int64(value: Any) -> None:
    """Refuse any integer outside the signed 64-bit range, walking the decoded value without recursion."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool) and not INT64_MIN <= item <= INT64_MAX:
            raise bad_request(f"The request body holds the integer {item}, which does not fit in 64 bits.")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"
