"""A mock upstream LLM provider speaking the OpenAI, Anthropic and Gemini wire formats, steerable per request.

Run it with `python -m devtools.mock_upstream --port 9100` (`--help` lists every `[mock ...]` directive:
error statuses, `times`/`key`, cut streams, usage, token counts, latency). Tests start it in a thread
(`MockServerThread`) or call the ASGI app in-process (`create_mock_app`).

- `directives.py`: the `[mock ...]` directives and the reply text they produce.
- `openai.py`, `anthropic.py`, `gemini.py`: one wire format each (tool choice, error envelopes, usage,
  answers, stream events).
- `app.py`: the raw ASGI app (routing, failures, streaming, cut connections, introspection).
- `server.py`: uvicorn in the foreground or in a background thread; `__main__.py`: the command line.

Tools: when the request offers tools, tool choice is not "none" and the last message is the user's
(not a tool result), the reply is a call of the first tool (or the one tool_choice names) with arguments
`{"mock": true}`. A cut stream (`cut_after`) ends with an incomplete chunked body: httpx raises
`RemoteProtocolError` after yielding the chunks that arrived; the openai SDK raises `APIConnectionError`.
"""

from devtools.mock_upstream.app import MockUpstreamApp, create_mock_app, error_body
from devtools.mock_upstream.common import RecordedRequest, StreamPlan
from devtools.mock_upstream.directives import (
    DIRECTIVES,
    TOOL_ARGUMENT_FRAGMENTS,
    TOOL_ARGUMENTS,
    Behaviour,
    DirectiveError,
    MockConfig,
    parse_directives,
    reply_text,
    reply_words,
)
from devtools.mock_upstream.server import MockServerThread, serve_mock

__all__ = [
    "DIRECTIVES",
    "TOOL_ARGUMENTS",
    "TOOL_ARGUMENT_FRAGMENTS",
    "Behaviour",
    "DirectiveError",
    "MockConfig",
    "MockServerThread",
    "MockUpstreamApp",
    "RecordedRequest",
    "StreamPlan",
    "create_mock_app",
    "error_body",
    "parse_directives",
    "reply_text",
    "reply_words",
    "serve_mock",
]
