"""Token counting for reservations and for usage a provider did not report.

tiktoken downloads its encodings on first use; a gateway without internet must neither hang nor crash on
that. So an encoding is only loaded when its file is already in tiktoken's cache folder; otherwise counts
fall back to a byte heuristic, and the estimator's name says which was used.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
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
    """A counter for one encoding, loaded once per process (on its first use); never downloads."""
    if encoding_is_cached(name):
        try:
            import tiktoken

            encoding = tiktoken.get_encoding(name)
        except Exception:  # a corrupt cache file: fall back rather than fail the request
            pass
        else:
            _drop_python_ranks(encoding)
            return TokenCounter(estimator=f"tiktoken:{name}", _encoder=encoding)
    return TokenCounter(estimator="bytes/4", _encoder=None)


def _drop_python_ranks(encoding: Any) -> None:
    """Free the Python copy of an encoding's ranks: o200k's is ~27 MB per process, cl100k's ~13 MB.

    tiktoken (0.14) hands `mergeable_ranks` to its Rust `CoreBPE`, which keeps its own copy and does every
    encode; the Python dict stays in `Encoding._mergeable_ranks` only for pickling the Encoding
    (`__getstate__`) and for `tiktoken._educational`, neither of which the gateway uses. Counts are unchanged
    (tests/unit/test_tokens.py compares them with a freshly built Encoding). Then glibc is asked to give the
    freed heap back (the load leaves it fragmented); elsewhere that step is skipped."""
    if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
        encoding._mergeable_ranks = {}
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def counter_for_model(model: str) -> TokenCounter:
    return counter_for_encoding(encoding_name_for(model))


# -- media: each provider's own accounting -------------------------------------------------------------------

# OpenAI (GPT-4o family): low detail is a flat 85; otherwise the image is fitted in 2048x2048, its short side
# scaled down to 768, and every 512-px tile costs 170 on top of a base of 85.
OPENAI_LOW_DETAIL_TOKENS = 85
OPENAI_BASE_TOKENS = 85
OPENAI_TILE_TOKENS = 170
# An image whose size the gateway cannot see (a URL it does not fetch): the worst case, 2048x768 (8 tiles).
UNKNOWN_IMAGE_SIZE = (2048, 768)
# Anthropic: about width*height/750, and images are downscaled so that one costs at most about 1,600.
ANTHROPIC_PIXELS_PER_TOKEN = 750
ANTHROPIC_MAX_IMAGE_TOKENS = 1600
# Gemini: 258 per image up to 384x384; a larger one is cut into 768x768 tiles of 258 each.
GEMINI_IMAGE_TOKENS = 258
GEMINI_SMALL_IMAGE_PX = 384
GEMINI_TILE_PX = 768
# Gemini counts video at 263 tokens a second (one frame a second) and audio at 32. The length of a video the
# gateway does not fetch is unknown: it reserves this many seconds (a longer one may overrun the estimate).
GEMINI_VIDEO_TOKENS_PER_SECOND = 263
GEMINI_AUDIO_TOKENS_PER_SECOND = 32
ASSUMED_MEDIA_SECONDS = 300

# Anthropic prepends a tool-use system prompt whenever tools are offered. Its docs give 346 tokens (313 for
# tool_choice any/tool) on Claude 3.5-4; claude-opus-4-6 with tool_choice any reported ~600 beyond the text
# (fixtures-apis/anthropic/count-tokens-thinking-tools), so 600 is reserved.
ANTHROPIC_TOOL_SYSTEM_TOKENS = 600
# Extended thinking adds a preamble of its own: +29 and +32 tokens observed on claude-sonnet-4-0 / 4-5.
ANTHROPIC_THINKING_TOKENS = 40
# A server tool (code execution, web search...) brings its own definition and at least one round of results
# fed back as input: code_execution_20260120 reported 2,293 input tokens for the first round and 4,714 after
# one tool round for a 20-token prompt (fixtures-apis/anthropic/messages-stream-thinking-server-tool-use).
ANTHROPIC_SERVER_TOOL_TOKENS = 4_700
# OpenAI offers tools to the model in a hidden preamble: gpt-4o on the Responses API (2025-03 recording,
# fixtures-apis/openai/responses-stream-function-call-2025-03) reported 196 tokens beyond the definitions'
# JSON. OpenAI-compatible providers are given the same allowance.
OPENAI_TOOLS_PREAMBLE_TOKENS = 200

# Text is counted with tiktoken; providers whose tokenizer is not tiktoken's count more (or fewer) tokens
# for the same text. Each factor is the worst ratio reported/estimated over the recorded fixtures with every
# factor at 1, rounded up to 0.05 and never below 1 (`bench/estimate_calibration.py --raw` prints it):
#   anthropic n=9 max 1.118 · deepseek n=2 max 1.070 · gemini n=7 max 0.783 · openai n=17 max 1.000.
# A factor scales the text only (not preambles or media), so DeepSeek's is raised one more step to 1.15, the
# smallest that holds on its tool-call fixture. xAI and Together have no recorded request with a reported
# count: they take the largest factor.
PROVIDER_SAFETY_FACTORS: Mapping[str, Decimal] = {
    "openai": Decimal("1.00"),
    "anthropic": Decimal("1.15"),
    "gemini": Decimal("1.00"),
    "deepseek": Decimal("1.15"),
    "xai": Decimal("1.15"),
    "together": Decimal("1.15"),
}
DEFAULT_SAFETY_FACTOR = max(PROVIDER_SAFETY_FACTORS.values())

_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_VIDEO_PARTS = frozenset({"video_url", "input_video", "video"})


def safety_factor(provider: str) -> Decimal:
    """The multiplier applied to tiktoken's text count for `provider` (see PROVIDER_SAFETY_FACTORS)."""
    return PROVIDER_SAFETY_FACTORS.get(provider.lower(), DEFAULT_SAFETY_FACTOR)


def openai_image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """OpenAI's published image cost: 85 at low detail, else 85 + 170 per 512-px tile after scaling."""
    if detail == "low":
        return OPENAI_LOW_DETAIL_TOKENS
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return OPENAI_BASE_TOKENS + OPENAI_TILE_TOKENS * tiles


def anthropic_image_tokens(width: int, height: int) -> int:
    """Anthropic's published image cost: width*height/750 tokens, at most ~1,600 (larger ones are resized)."""
    return min(math.ceil(width * height / ANTHROPIC_PIXELS_PER_TOKEN), ANTHROPIC_MAX_IMAGE_TOKENS)


def gemini_image_tokens(width: int, height: int) -> int:
    """Gemini's published image cost: 258, or 258 per 768x768 tile for an image larger than 384x384."""
    if width <= GEMINI_SMALL_IMAGE_PX and height <= GEMINI_SMALL_IMAGE_PX:
        return GEMINI_IMAGE_TOKENS
    return GEMINI_IMAGE_TOKENS * math.ceil(width / GEMINI_TILE_PX) * math.ceil(height / GEMINI_TILE_PX)


def image_tokens(provider: str, size: tuple[int, int] | None, detail: str = "auto") -> int:
    """One image's input tokens by `provider`'s rule; `size` None means unknown (the worst case is taken)."""
    name = provider.lower()
    if name == "anthropic":
        return ANTHROPIC_MAX_IMAGE_TOKENS if size is None else anthropic_image_tokens(*size)
    if name == "gemini":
        return GEMINI_IMAGE_TOKENS if size is None else gemini_image_tokens(*size)
    width, height = size or UNKNOWN_IMAGE_SIZE
    return openai_image_tokens(width, height, detail)


def video_tokens(provider: str) -> int:
    """A video of unknown length: ASSUMED_MEDIA_SECONDS of frames and audio at Gemini's rates."""
    return (GEMINI_VIDEO_TOKENS_PER_SECOND + GEMINI_AUDIO_TOKENS_PER_SECOND) * ASSUMED_MEDIA_SECONDS


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of a PNG, GIF, JPEG or WebP file; None if not recognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 ":
            return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(
                data[28:30], "little"
            ) & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        return None
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            index += 2
            continue
        length = int.from_bytes(data[index + 2 : index + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            return int.from_bytes(data[index + 7 : index + 9], "big"), int.from_bytes(
                data[index + 5 : index + 7], "big"
            )
        index += 2 + length
    return None


def data_url_image_size(url: str) -> tuple[int, int] | None:
    """The size of an image inlined as a base64 `data:` URL (only its first bytes are decoded)."""
    if not url.startswith("data:") or ";base64," not in url[:100]:
        return None
    encoded = url.split(",", 1)[1][:87_384]  # a multiple of 4: ~64 KB, enough to reach a JPEG's frame header
    try:
        return image_size(base64.b64decode(encoded[: len(encoded) - len(encoded) % 4]))
    except (binascii.Error, ValueError):
        return None


def _image_part(part: Mapping[str, Any]) -> tuple[tuple[int, int] | None, str]:
    """The size (if readable) and detail of an image part in the OpenAI, Responses or Anthropic shape."""
    detail = "auto"
    url: Any = None
    image = part.get("image_url")
    if isinstance(image, Mapping):
        url, detail = image.get("url"), str(image.get("detail") or "auto")
    elif isinstance(
        image, str
    ):  # the Responses API: {"type": "input_image", "image_url": "...", "detail": ...}
        url, detail = image, str(part.get("detail") or "auto")
    source = part.get("source")
    if isinstance(source, Mapping):  # Anthropic: {"type": "image", "source": {"type": "base64", "data": ...}}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
        else:
            url = source.get("url")
    return (data_url_image_size(url) if isinstance(url, str) else None), detail


def _content_tokens(counter: TokenCounter, content: Any, provider: str | None) -> tuple[int, int]:
    """(text tokens, media tokens) of one message's content."""
    if content is None:
        return 0, 0
    if isinstance(content, str):
        return counter.count(content), 0
    text = media = 0
    if isinstance(content, Sequence):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind in ("text", "input_text"):
                text += counter.count(str(part.get("text", "")))
            elif kind in _IMAGE_PARTS:
                if provider is None:
                    media += IMAGE_TOKENS_ESTIMATE
                else:
                    size, detail = _image_part(part)
                    media += image_tokens(provider, size, detail)
            elif kind in _VIDEO_PARTS and provider is not None:
                media += video_tokens(provider)
            else:
                text += counter.count(json.dumps(part, separators=(",", ":")))
    return text, media


def count_prompt_tokens(
    model: str,
    messages: Iterable[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    *,
    provider: str | None = None,
    response_format: Any = None,
    thinking: bool = False,
) -> tuple[int, str]:
    """Estimated prompt tokens of a chat request, and the estimator used.

    With `provider`, the estimate is meant to be at least what that provider will report: images by its own
    rule, its tool-use preamble, and text scaled by its safety factor. Without it (the chat path until it
    passes one), text is counted as for OpenAI and each image as a fixed IMAGE_TOKENS_ESTIMATE.
    """
    counter = counter_for_model(model)
    text = REPLY_PRIMING_TOKENS
    media = 0
    for message in messages:
        text += TOKENS_PER_MESSAGE
        text += counter.count(str(message.get("role", "")))
        content_text, content_media = _content_tokens(counter, message.get("content"), provider)
        text += content_text
        media += content_media
        if message.get("name"):
            text += TOKENS_PER_NAME + counter.count(str(message["name"]))
        if message.get("tool_calls"):
            text += counter.count(json.dumps(message["tool_calls"], separators=(",", ":")))
    if tools:
        text += counter.count(json.dumps(list(tools), separators=(",", ":")))
    if response_format is not None:
        text += counter.count(json.dumps(response_format, separators=(",", ":")))
    if provider is None:
        return text + media, counter.estimator
    return math.ceil(text * safety_factor(provider)) + media + preamble_tokens(provider, tools, thinking), (
        counter.estimator
    )


def preamble_tokens(provider: str, tools: Sequence[Any] | None, thinking: bool = False) -> int:
    """Input a provider adds to a request by itself: tool-use and thinking preambles, server-tool rounds."""
    name = provider.lower()
    total = 0
    if name == "anthropic":
        if tools:
            total += ANTHROPIC_TOOL_SYSTEM_TOKENS
            total += ANTHROPIC_SERVER_TOOL_TOKENS * sum(1 for tool in tools if _is_server_tool(tool))
        if thinking:
            total += ANTHROPIC_THINKING_TOKENS
    elif tools and name in ("openai", "xai", "deepseek", "together"):
        total += OPENAI_TOOLS_PREAMBLE_TOKENS
    return total


def _is_server_tool(tool: Any) -> bool:
    """An Anthropic server tool (`{"type": "web_search_20250305", "name": ...}`): typed, with no schema."""
    if not isinstance(tool, Mapping):
        return False
    kind = tool.get("type")
    return isinstance(kind, str) and kind not in ("custom", "function") and "input_schema" not in tool


def count_completion_tokens(model: str, text: str) -> tuple[int, str]:
    """Estimated tokens of generated text (content, tool-call arguments), and the estimator used."""
    counter = counter_for_model(model)
    return counter.count(text), counter.estimator
