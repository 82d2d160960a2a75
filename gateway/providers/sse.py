"""Server-sent events: an incremental decoder for upstream streams and the encoder for our own.

Pure and synchronous: the proxy feeds it whatever byte chunks the socket gives and gets whole events back.
"""

from __future__ import annotations

from gateway.providers.base import SSEEvent

_UTF8_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Turn arbitrarily split bytes of a `text/event-stream` into events (WHATWG event-stream rules).

    Bytes are buffered until a line is complete, so a multi-byte character split across chunks decodes
    correctly (line ends are ASCII, never inside a UTF-8 sequence). `id:` and `retry:` are ignored.
    """

    __slots__ = ("_buf", "_data", "_event", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buf = bytearray()  # the incomplete last line
        self._data: list[bytes] = []  # `data:` values of the event being read
        self._event: bytes | None = None  # its `event:` name
        self._skip_lf = False  # the last chunk ended in \r: a \n opening the next one ends no new line
        self._started = False  # a BOM may open the stream, once

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by `chunk` (an event is complete at the blank line that ends it)."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\n" not in chunk and b"\r" not in chunk:
            self._buf += chunk
            return []
        if self._buf:
            self._buf += chunk
            data = bytes(self._buf)
            self._buf.clear()
        else:
            data = chunk
        lines = data.splitlines()  # bytes.splitlines splits on exactly \r\n, \n and \r
        last = data[-1]
        if last == 0x0D:
            self._skip_lf = True
        elif last != 0x0A:
            self._buf += lines.pop()
        return self._lines(lines)

    def flush(self) -> list[SSEEvent]:
        """At end of stream: the event still open, if any.

        WHATWG drops an event not closed by a blank line; we keep it, since some providers end the body
        right after the last `data:` line and that event is often the one with the usage or the error.
        """
        lines = [bytes(self._buf)] if self._buf else []
        self._buf.clear()
        self._skip_lf = False
        events = self._lines(lines)
        if self._data:
            events.append(self._dispatch())
        self._event = None
        return events

    def _lines(self, lines: list[bytes]) -> list[SSEEvent]:
        if not self._started and lines:
            self._started = True
            if lines[0].startswith(_UTF8_BOM):
                lines[0] = lines[0][3:]
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(self._dispatch())
                else:
                    self._event = None  # a blank line with no data dispatches nothing and resets the name
                continue
            if line[0] == 0x3A:  # ':' opens a comment (keep-alives, OpenRouter's "PROCESSING")
                continue
            colon = line.find(b":")
            if colon < 0:
                field, value = line, b""
            else:
                field, value = line[:colon], line[colon + 1 :]
                if value[:1] == b" ":
                    value = value[1:]
            if field == b"data":
                self._data.append(value)
            elif field == b"event":
                self._event = value
        return events

    def _dispatch(self) -> SSEEvent:
        data = b"\n".join(self._data).decode("utf-8", "replace")
        name = self._event.decode("utf-8", "replace") if self._event else None
        self._data = []
        self._event = None
        return SSEEvent(data=data, event=name)


def encode_sse(data: bytes) -> bytes:
    """One `data:` event. `data` must be a single line (compact JSON is), or the framing breaks."""
    return b"data: " + data + b"\n\n"
