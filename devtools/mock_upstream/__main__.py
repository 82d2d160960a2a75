"""`python -m devtools.mock_upstream --port 9100`: serve the mock provider until interrupted."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devtools.mock_upstream.directives import MockConfig, directives_help
from devtools.mock_upstream.server import serve_mock


def build_parser() -> argparse.ArgumentParser:
    """The command line: where to listen and the defaults every answer starts from."""
    defaults = MockConfig()
    parser = argparse.ArgumentParser(
        prog="python -m devtools.mock_upstream",
        description="A mock LLM provider: OpenAI /v1/chat/completions, Anthropic /v1/messages and Gemini "
        "/v1beta/models/{model}:generateContent|streamGenerateContent, streamed or not, with tools. "
        "GET /_mock/requests lists what it received; DELETE /_mock/requests clears that and the "
        "times/key counters; GET /health answers ok.",
        epilog=directives_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9100, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=defaults.latency_ms,
        help="default delay before the first byte, ms (directive latency_ms; default: %(default)s)",
    )
    parser.add_argument(
        "--prompt-tokens",
        type=int,
        default=defaults.prompt_tokens,
        help="default reported prompt tokens (directive prompt_tokens; default: %(default)s)",
    )
    parser.add_argument(
        "--completion-tokens",
        type=int,
        default=defaults.completion_tokens,
        help="default reply length in words = completion tokens (default: %(default)s)",
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=defaults.chunk_delay_ms,
        help="default delay between stream events, ms (directive chunk_delay_ms; default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, say where the mock listens (one line on stderr), and serve."""
    args = build_parser().parse_args(argv)
    config = MockConfig(
        latency_ms=args.latency_ms,
        prompt_tokens=args.prompt_tokens,
        completion_tokens=args.completion_tokens,
        chunk_delay_ms=args.chunk_delay_ms,
    )
    print(f"mock upstream on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    serve_mock(args.host, args.port, config)


if __name__ == "__main__":
    main()
