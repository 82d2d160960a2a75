"""The `[mock ...]` directives that steer one answer, and the reply they produce.

A gateway forwards only the body, so tests steer the mock with a directive in the text of the last user
message. `DIRECTIVES` documents each one; `python -m devtools.mock_upstream --help` prints them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

TOOL_ARGUMENTS = '{"mock": true}'
# The tool arguments as they arrive in a stream: two fragments, so clients must concatenate.
TOOL_ARGUMENT_FRAGMENTS = ('{"mock"', ": true}")

_DIRECTIVE = re.compile(r"\[mock\b([^\]]*)\]")
_INT_DIRECTIVES = frozenset(
    {
        "status",
        "times",
        "cut_after",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    }
)
_FLOAT_DIRECTIVES = frozenset({"latency_ms", "chunk_delay_ms"})
RETRYABLE = frozenset({429, 503, 529})


DIRECTIVES: dict[str, str] = {
    "status=N": "answer HTTP N (400-599) with the provider's real error envelope "
    "(`retry-after: 0` on 429/503/529; Gemini's 429 carries a RetryInfo retryDelay of 1s)",
    "times=K": "with status: only the first K requests carrying the same `key` fail; later ones succeed "
    "(counters per app; DELETE /_mock/requests resets them)",
    "key=X": "the counter `times` counts against (default: the empty key)",
    "cut_after=N": "streams: send at most N content chunks, then close the connection without the finish "
    "chunk, the usage and [DONE] (the client sees an incomplete chunked body)",
    "usage=none": "report no usage at all (no `usage` key, no usage chunk, no usageMetadata)",
    "prompt_tokens=N": "prompt_tokens / input_tokens / promptTokenCount",
    "completion_tokens=N": "completion_tokens / output_tokens / candidatesTokenCount, and the number of "
    'words in the reply ("mock0 mock1 ...")',
    "cached_tokens=N": "prompt_tokens_details.cached_tokens / cache_read_input_tokens / "
    "cachedContentTokenCount",
    "cache_write_tokens=N": "prompt_tokens_details.cache_write_tokens (when > 0) / "
    "cache_creation_input_tokens",
    "reasoning_tokens=N": "completion_tokens_details.reasoning_tokens / thoughtsTokenCount "
    "(Gemini's totalTokenCount adds it; Anthropic has no such field)",
    "echo_key=yes": "with status: the error message repeats the key the request carried (Authorization "
    "bearer, x-api-key or x-goog-api-key), as OpenAI's 401 'Incorrect API key provided: sk-…' does",
    "latency_ms=X": "delay before the first byte of the answer (milliseconds)",
    "chunk_delay_ms=X": "delay between stream events (milliseconds)",
    "reply=TEXT": "answer with TEXT (percent-decoded: %20 is a space, %7B a brace) instead of the "
    '"mock0 mock1 ..." words, e.g. a JSON reply for a caller that parses one (the insights tagger)',
}


def directives_help() -> str:
    """The directives as plain text, one per line (the CLI's --help epilog)."""
    width = max(len(name) for name in DIRECTIVES)
    lines = [f"  {name.ljust(width)}  {text}" for name, text in DIRECTIVES.items()]
    return (
        "Steer one answer with a directive in the last user message, e.g.\n"
        "  [mock status=529 times=1 key=abc cut_after=3 usage=none latency_ms=30]\n"
        "Any subset, any order; several [mock ...] blocks merge (the later wins); an unknown name or a bad "
        "value is answered with a 400 in the format's error envelope.\n\n" + "\n".join(lines)
    )


@dataclass(frozen=True, slots=True)
class MockConfig:
    """Defaults for every answer; a request's `[mock ...]` directive overrides them."""

    latency_ms: float = 0.0
    prompt_tokens: int = 12
    completion_tokens: int = 8
    chunk_delay_ms: float = 0.0


@dataclass(slots=True)
class Behaviour:
    """How to answer one request: the config merged with the request's directives."""

    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    chunk_delay_ms: float
    status: int | None = None
    times: int | None = None
    key: str = ""
    cut_after: int | None = None
    usage: bool = True
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    echo_key: bool = False
    reply: str | None = None  # the answer's text instead of the mock words (directive reply=)


class DirectiveError(ValueError):
    """A `[mock ...]` directive the mock does not understand."""


def parse_directives(text: str, config: MockConfig) -> Behaviour:
    """The behaviour for a request whose last user message is `text`; raises DirectiveError."""
    behaviour = Behaviour(
        prompt_tokens=config.prompt_tokens,
        completion_tokens=config.completion_tokens,
        latency_ms=config.latency_ms,
        chunk_delay_ms=config.chunk_delay_ms,
    )
    if "[mock" not in text:
        return behaviour
    for match in _DIRECTIVE.finditer(text):
        for item in match.group(1).split():
            name, sep, value = item.partition("=")
            if not sep or not value:
                raise DirectiveError(f"mock directive {item!r} is not name=value")
            if name in _INT_DIRECTIVES:
                if not value.isdigit():
                    raise DirectiveError(f"mock directive {name} needs a non-negative integer, got {value!r}")
                number = int(value)
                if name == "status" and not 400 <= number <= 599:
                    raise DirectiveError(f"mock directive status must be 400-599, got {number}")
                setattr(behaviour, name, number)
            elif name in _FLOAT_DIRECTIVES:
                try:
                    seconds = float(value)
                except ValueError:
                    raise DirectiveError(f"mock directive {name} needs a number, got {value!r}") from None
                if not seconds >= 0:
                    raise DirectiveError(f"mock directive {name} must be >= 0, got {value!r}")
                setattr(behaviour, name, seconds)
            elif name == "key":
                behaviour.key = value
            elif name == "echo_key":
                if value != "yes":
                    raise DirectiveError(f"mock directive echo_key only takes 'yes', got {value!r}")
                behaviour.echo_key = True
            elif name == "reply":
                behaviour.reply = unquote(value)
            elif name == "usage":
                if value != "none":
                    raise DirectiveError(f"mock directive usage only takes 'none', got {value!r}")
                behaviour.usage = False
            else:
                raise DirectiveError(f"unknown mock directive {name!r}")
    return behaviour


@lru_cache(maxsize=64)
def reply_words(count: int) -> tuple[str, ...]:
    """The reply as stream pieces: "mock0", " mock1", ... (joined: `count` space-separated words)."""
    return tuple(f"mock{i}" if i == 0 else f" mock{i}" for i in range(count))


def reply_text(count: int) -> str:
    """The full reply text of `count` words."""
    return "".join(reply_words(count))


def answer_text(b: Behaviour) -> str:
    """The reply of an answer: the `reply=` directive's text, else `completion_tokens` mock words."""
    return b.reply if b.reply is not None else reply_text(b.completion_tokens)


def answer_pieces(b: Behaviour) -> tuple[str, ...]:
    """The reply as stream pieces: the `reply=` text in two halves, else the mock words."""
    if b.reply is not None:
        middle = len(b.reply) // 2
        return tuple(p for p in (b.reply[:middle], b.reply[middle:]) if p)
    return reply_words(b.completion_tokens)
