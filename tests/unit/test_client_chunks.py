"""What the client sees of the upstream's stream chunks, with and without stream_options.include_usage."""

from __future__ import annotations

from gateway.chat.relay import client_chunks

USAGE = {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
TEXT = {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}
FINISH_WITH_USAGE = {
    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    "usage": USAGE,
}  # DeepSeek
USAGE_ONLY = {"choices": [], "usage": USAGE}


def test_usage_is_hidden_but_the_finish_reason_kept_when_the_client_did_not_ask() -> None:
    seen = list(client_chunks([TEXT, FINISH_WITH_USAGE, USAGE_ONLY], include_usage=False))
    assert seen == [
        {"choices": TEXT["choices"]},
        {"choices": FINISH_WITH_USAGE["choices"]},
    ]


def test_everything_passes_when_the_client_asked_for_usage() -> None:
    chunks = [TEXT, FINISH_WITH_USAGE, USAGE_ONLY]
    assert list(client_chunks(chunks, include_usage=True)) == chunks
