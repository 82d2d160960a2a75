"""Scrub secrets out of text before it leaves the gateway: provider error messages, log lines, API answers.

Providers echo the key they received ("Incorrect API key provided: sk-proj-…"), so a text is cleaned of
(1) every credential the gateway itself sent, matched even where JSON escaping split it (`\\u002d`, `\\/`),
and (2) anything shaped like a known provider's key or a bearer token. A redaction keeps at most the last
four characters, enough to tell two keys apart in a support ticket. Pure: no I/O, no logging.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MIN_KNOWN_SECRET = 4  # shorter "secrets" would shred ordinary words and protect nothing
TAIL_KEPT_FROM = 16  # only keys at least this long keep their last four characters

# One character of a key as it may appear in text: itself, or JSON-escaped (`\u00XX`, `\/`).
_ESCAPED = r"\\u[0-9a-fA-F]{4}|\\/"
_KEY_CHAR = rf"(?:[A-Za-z0-9_\-]|{_ESCAPED})"
_DASH = r"(?:-|\\u002[dD])"
# Not inside a longer word ("task-based"), but a key right after a JSON escape (`\nsk-…`) still counts.
_NOT_AFTER_KEY_CHAR = r"(?:(?<![A-Za-z0-9_\-])|(?<=\\[nrtbf]))"
_SHAPED = re.compile(
    _NOT_AFTER_KEY_CHAR
    + "(?:"
    + "|".join(
        (
            # OpenAI (sk-, sk-proj-, sk-svcacct-, sk-admin-), Anthropic (sk-ant-), SynapGate (sk-sg-)
            rf"sk{_DASH}{_KEY_CHAR}{{16,}}",
            # Google API keys: AIza + 35 characters
            rf"AIza{_KEY_CHAR}{{30,}}",
            rf"xai{_DASH}{_KEY_CHAR}{{16,}}",
            rf"gsk_{_KEY_CHAR}{{16,}}",
        )
    )
    + ")"
)
# A bearer token in prose or a header dump: keep the word, redact the token.
_BEARER = re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=\-]{8,})")
_JSON_ESCAPE = re.compile(_ESCAPED)


def redact(secret: str) -> str:
    """The redaction of one secret: a marker and, for a long key, its last four characters."""
    plain = _JSON_ESCAPE.sub(_unescape_one, secret)
    return f"[redacted…{plain[-4:]}]" if len(plain) >= TAIL_KEPT_FROM else "[redacted]"


def scrub(text: str, known: Iterable[str] = ()) -> str:
    """`text` with every known secret and everything shaped like a provider key or bearer token redacted."""
    secrets = sorted({s for s in known if s and len(s) >= MIN_KNOWN_SECRET}, key=len, reverse=True)
    for secret in secrets:
        text = _known_pattern(secret).sub(redact(secret), text)
    text = _SHAPED.sub(_redact_shaped, text)
    return _BEARER.sub(lambda m: m.group(1) + redact(m.group(2)), text)


def scrub_value(value: Any, known: Iterable[str] = ()) -> Any:
    """A JSON-like value (dicts, lists, tuples, strings) with every string scrubbed, keys included."""
    secrets = tuple(known)
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {scrub_value(k, secrets): scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(item, secrets) for item in value)
    return value


def _redact_shaped(match: re.Match[str]) -> str:
    # Random keys always hold a digit; hyphenated words of the same shape ("sk-learn-compatible-…") do not.
    key = match.group()
    return redact(key) if any(c.isdigit() for c in key) else key


def _unescape_one(match: re.Match[str]) -> str:
    escape = match.group()
    return "/" if escape == "\\/" else chr(int(escape[2:], 16))


def _known_pattern(secret: str) -> re.Pattern[str]:
    """Matches `secret` literally or with any of its characters JSON-escaped (`\\uXXXX`, `\\/` for `/`)."""
    parts = []
    for char in secret:
        alternatives = [re.escape(char), rf"\\u{ord(char):04x}", rf"\\u{ord(char):04X}"]
        if char == "/":
            alternatives.append(r"\\/")
        if ord(char) > 0xFFFF:  # JSON writes it as a surrogate pair
            high, low = _surrogates(char)
            alternatives.append(rf"\\u(?i:{high:04x})\\u(?i:{low:04x})")
        parts.append("(?:" + "|".join(alternatives) + ")")
    return re.compile("".join(parts))


def _surrogates(char: str) -> tuple[int, int]:
    code = ord(char) - 0x10000
    return 0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)
