"""SSEDecoder: WHATWG line and field rules, and the real recorded streams fed in arbitrary pieces."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from gateway.providers.base import SSEEvent
from gateway.providers.sse import SSEDecoder, encode_sse

SSE_FIXTURES = [
    "openai/chat-stream-tool-call-include-usage.sse",
    "openai/chat-stream-parallel-tool-calls-2024.sse",
    "openai/chat-stream-n3-interleaved-choices-2024.sse",
    "deepseek/chat-stream-reasoner-usage-on-finish-chunk.sse",
    "groq/chat-stream-midstream-error-tool-use-failed.sse",
    "google/stream-basic-text.sse",  # \r\n line ends
    "anthropic/messages-stream-compaction-cache-read.sse",  # emoji: multi-byte UTF-8
    "anthropic/messages-stream-tool-use.sse",  # no line end after the last event
]


def decode_all(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def random_pieces(data: bytes, rng: random.Random, max_size: int = 7) -> list[bytes]:
    pieces = []
    i = 0
    while i < len(data):
        n = rng.randint(1, max_size)
        pieces.append(data[i : i + n])
        i += n
    return pieces


def reference_events(data: bytes) -> list[SSEEvent]:
    """An independent, slow reading of a whole stream: decode once, split with a regex."""
    events = []
    lines: list[str] = []
    name: str | None = None
    for line in re.split(r"\r\n|\r|\n", data.decode("utf-8")):
        if line == "":
            if lines:
                events.append(SSEEvent(data="\n".join(lines), event=name))
            lines, name = [], None
        elif line.startswith("data:"):
            lines.append(line[6:] if line.startswith("data: ") else line[5:])
        elif line.startswith("event:"):
            name = line[7:] if line.startswith("event: ") else line[6:]
    if lines:  # an unterminated last event is kept (see SSEDecoder.flush)
        events.append(SSEEvent(data="\n".join(lines), event=name))
    return events


def test_data_lines_join_with_newline_and_one_space_is_stripped() -> None:
    events = decode_all([b"data: a\ndata:b\ndata:  c\ndata\n\n"])
    assert events == [SSEEvent(data="a\nb\n c\n")]


def test_event_name_comments_id_and_retry() -> None:
    stream = b': keep-alive\nid: 7\nretry: 1000\nevent: error\ndata: {"x":1}\n\ndata: next\n\n'
    assert decode_all([stream]) == [SSEEvent(data='{"x":1}', event="error"), SSEEvent(data="next")]


def test_blank_line_without_data_dispatches_nothing_and_resets_the_name() -> None:
    assert decode_all([b"event: ping\n\ndata: x\n\n"]) == [SSEEvent(data="x", event=None)]


def test_empty_data_line_is_an_event_with_empty_data() -> None:
    assert decode_all([b"data:\n\n"]) == [SSEEvent(data="")]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(end: bytes) -> None:
    stream = b"event: e" + end + b"data: 1" + end + b"data: 2" + end + end + b"data: 3" + end + end
    assert decode_all([stream]) == [SSEEvent(data="1\n2", event="e"), SSEEvent(data="3")]


def test_cr_at_chunk_end_and_lf_at_next_chunk_start_are_one_line_end() -> None:
    # Were they two line ends, the \n would be a blank line: "a" would be dispatched alone, and the
    # event name "x" would be reset before its data arrived.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r\n\r") == [SSEEvent(data="a\nb")]
    assert decoder.feed(b"\nevent: x\r") == []
    assert decoder.feed(b"\ndata: c\n\n") == [SSEEvent(data="c", event="x")]


def test_lone_cr_at_chunk_end_is_a_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\rdata: b\r\r") == [SSEEvent(data="a"), SSEEvent(data="b")]


def test_multibyte_utf8_split_across_chunks() -> None:
    stream = "data: héllo 😊 世界\n\n".encode()
    events = decode_all([stream[i : i + 1] for i in range(len(stream))])
    assert events == [SSEEvent(data="héllo 😊 世界")]


def test_a_leading_bom_is_dropped_once() -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    assert decode_all([stream[:2], stream[2:]]) == [SSEEvent(data="x")]


def test_flush_dispatches_an_unterminated_last_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b\ndata: c") == [SSEEvent(data="a")]
    assert decoder.flush() == [SSEEvent(data="b\nc")]
    assert decoder.flush() == []


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n") == []
    assert decoder.feed(b"\n") == [SSEEvent(data="1")]


def test_encode_sse() -> None:
    assert encode_sse(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert decode_all([encode_sse(b'{"a":1}') + encode_sse(b"[DONE]")]) == [
        SSEEvent(data='{"a":1}'),
        SSEEvent(data="[DONE]"),
    ]


@pytest.mark.parametrize("name", SSE_FIXTURES)
def test_recorded_streams_decode_the_same_in_any_pieces(fixtures_dir: Path, name: str) -> None:
    data = (fixtures_dir / name).read_bytes()
    whole = decode_all([data])
    assert whole == reference_events(data)
    assert len(whole) >= 3
    for seed in range(5):
        assert decode_all(random_pieces(data, random.Random(seed))) == whole, f"seed {seed}"


def test_recorded_openai_stream_events(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "openai/chat-stream-tool-call-include-usage.sse").read_bytes()
    events = decode_all(random_pieces(data, random.Random(42)))
    assert len(events) == 9
    assert all(e.event is None for e in events)
    assert events[0].data.startswith('{"id":"chatcmpl-Dx0XpqH8w09uBXwq1zFGYdETjtnEl"')
    assert events[-1] == SSEEvent(data="[DONE]")


def test_recorded_groq_error_event_keeps_its_name(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "groq/chat-stream-midstream-error-tool-use-failed.sse").read_bytes()
    events = decode_all(random_pieces(data, random.Random(7)))
    assert [e.event for e in events].count("error") == 1
    assert events[-1].event == "error"
    assert events[-1].data.startswith('{"error":{"message":"Tool call validation failed')


def test_recorded_emoji_survives_byte_by_byte_feeding(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "anthropic/messages-stream-compaction-cache-read.sse").read_bytes()
    events = decode_all([data[i : i + 1] for i in range(len(data))])
    assert any('"text":"👋"' in e.data for e in events)
    assert not any("\ufffd" in e.data for e in events)


def test_recorded_stream_without_final_line_end_needs_flush(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "anthropic/messages-stream-tool-use.sse").read_bytes()
    decoder = SSEDecoder()
    fed = decoder.feed(data)
    assert fed[-1].event == "message_delta"
    assert decoder.flush() == [SSEEvent(data='{"type":"message_stop"}', event="message_stop")]
