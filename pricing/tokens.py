"""Token counting for reservations and for usage a provider did not report.

tiktoken downloads its encodings on first use; a gateway without internet must neither hang nor crash on
that. So an encoding is only loaded when its file is already in tiktoken's cache folder; otherwise counts
fall back to a byte heuristic, and the estimator's name says which was used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

_ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")

# OpenAI's published accounting for chat messages: every message costs a few framing tokens, and the
# reply is primed with three more.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
# An image's token cost depends on its size, which the gateway does not fetch; reserve a high-detail tile set.
IMAGE_TOKENS_ESTIMATE = 1105
BYTES_PER_TOKEN_HEURISTIC = 4


class _Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class TokenCounter:
    """Counts tokens of text with one encoding, or by bytes/4 when the encoding is not available."""

    estimator: str
    _encoder: _Encoder | None

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._encoder is not None:
            return len(self._encoder.encode_ordinary(text))
        return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN_HEURISTIC)


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding that counts (or best approximates) a model's tokens."""
    name = model.lower().rsplit("/", 1)[-1]
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


def _cache_dir() -> str:
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


# tiktoken checks these too, but on a mismatch it deletes the file and downloads it again.
_ENCODING_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


def encoding_is_cached(name: str) -> bool:
    """Whether tiktoken can load `name` without touching the network: its file is cached and intact."""
    key = hashlib.sha1(_ENCODING_URL.format(name=name).encode()).hexdigest()
    directory = _cache_dir()
    path = os.path.join(directory, key)
    if not directory or not os.path.isfile(path):
        return False
    expected = _ENCODING_SHA256.get(name)
    if expected is None:
        return True
    with open(path, "rb") as cached:
        return hashlib.sha256(cached.read()).hexdigest() == expected


@lru_cache(maxsize=8)
def counter_for_encoding(name: str) -> TokenCounter:
    """A counter for one encoding, loaded once per process; never downloads."""
    if encoding_is_cached(name):
        try:
            import tiktoken

            return TokenCounter(estimator=f"tiktoken:{name}", _encoder=tiktoken.get_encoding(name))
        except Exception:  # a corrupt cache file: fall back rather than fail the request
            pass
    return TokenCounter(estimator="bytes/4", _encoder=None)


def counter_for_model(model: str) -> TokenCounter:
    return counter_for_encoding(encoding_name_for(model))


def _content_tokens(counter: TokenCounter, content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return counter.count(content)
    total = 0
    if isinstance(content, Sequence):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind == "text":
                total += counter.count(str(part.get("text", "")))
            elif kind in ("image_url", "input_image", "image"):
                total += IMAGE_TOKENS_ESTIMATE
            else:
                total += counter.count(json.dumps(part, separators=(",", ":")))
    return total


def count_prompt_tokens(
    model: str, messages: Iterable[Mapping[str, Any]], tools: Sequence[Any] | None = None
) -> tuple[int, str]:
    """Estimated prompt tokens of a chat request, and the estimator used."""
    counter = counter_for_model(model)
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        total += counter.count(str(message.get("role", "")))
        total += _content_tokens(counter, message.get("content"))
        if message.get("name"):
            total += TOKENS_PER_NAME + counter.count(str(message["name"]))
        if message.get("tool_calls"):
            total += counter.count(json.dumps(message["tool_calls"], separators=(",", ":")))
    if tools:
        total += counter.count(json.dumps(list(tools), separators=(",", ":")))
    return total, counter.estimator


def count_completion_tokens(model: str, text: str) -> tuple[int, str]:
    """Estimated tokens of generated text (content, tool-call arguments), and the estimator used."""
    counter = counter_for_model(model)
    return counter.count(text), counter.estimator
