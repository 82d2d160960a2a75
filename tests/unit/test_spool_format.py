"""The spool file format: length-prefixed, checksummed frames; a torn or corrupt tail is ignored and reported.

Real files in a temporary directory (fsync included); no database.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from pricing.cost import Usage
from storage.types import utcnow
from storage.usage.recorder import CompletionRecord
from storage.usage.spool import (
    SpooledRecord,
    SpoolFile,
    SpoolUnavailable,
    encode_frame,
    read_frames,
    spool_status,
)


def entry(n: int = 0, *, prompt: object = None) -> SpooledRecord:
    rec = CompletionRecord(
        request_id=f"req_{n}_{uuid.uuid4().hex[:8]}",
        user_id=uuid.uuid4(),
        workspace_id=None,
        api_key_id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        llm_id=3,
        model="gpt-4o-mini",
        provider="openai",
        price_version=2,
        usage=Usage(
            prompt_tokens=11, completion_tokens=7, cached_tokens=2, source="estimated", estimator="e"
        ),
        cost_nano=1234,
        charged_nano=1234,
        byok=False,
        is_stream=True,
        status="success",
        latency_ms=42,
        created_at=utcnow(),
        ttft_ms=5,
        prompt=prompt,
        content="hi" if prompt is not None else None,
    )
    return SpooledRecord(rec, utcnow(), "test")


def test_a_frame_round_trips_every_field() -> None:
    original = entry(prompt=[{"role": "user", "content": "héllo"}])
    contents = read_frames(encode_frame(original) * 2)
    assert contents.records == [original, original]
    assert contents.torn_bytes == 0


@pytest.mark.parametrize("cut", [1, 5, 8, 9, 30])
def test_a_torn_last_record_is_ignored_and_reported(cut: int) -> None:
    first, second = encode_frame(entry(1)), encode_frame(entry(2))
    data = first + second[:-cut] if cut < len(second) else first
    contents = read_frames(data)
    assert contents.records == read_frames(first).records
    assert contents.good_bytes == len(first)
    assert contents.torn_bytes == len(data) - len(first)


def test_a_checksum_mismatch_stops_the_read_there() -> None:
    first, second, third = (encode_frame(entry(i)) for i in range(3))
    flipped = bytearray(second)
    flipped[-3] ^= 0x01  # one bit of the payload
    contents = read_frames(first + bytes(flipped) + third)
    assert len(contents.records) == 1
    assert contents.torn_bytes == len(second) + len(third)


def test_a_corrupt_length_is_not_read_as_a_huge_record() -> None:
    data = encode_frame(entry()) + b"\xff\xff\xff\xff\x00\x00\x00\x00" + b"x" * 20
    contents = read_frames(data)
    assert len(contents.records) == 1 and contents.torn_bytes == 28


async def test_appends_are_fsynced_in_order_and_rotated_for_replay(tmp_path: Path) -> None:
    spool = SpoolFile(tmp_path, "gw", 1 << 20)
    spool.open()
    entries = [entry(i) for i in range(20)]
    await asyncio.gather(*(spool.append(encode_frame(e)) for e in entries))  # share fsyncs
    assert spool.pending
    assert await spool.rotate()
    contents, _ = spool.read_replaying()
    assert contents.records == entries
    await spool.append(encode_frame(entry(99)))  # new appends go to a fresh file meanwhile
    assert spool_status(tmp_path).pending_records == 21
    spool.finish_replay()
    assert spool_status(tmp_path).pending_records == 1
    spool.close()


async def test_a_full_spool_refuses_and_says_so(tmp_path: Path) -> None:
    frame = encode_frame(entry())
    spool = SpoolFile(tmp_path, "gw", len(frame) + 10)
    spool.open()
    await spool.append(frame)
    assert not spool.writable
    with pytest.raises(SpoolUnavailable):
        await spool.append(frame)
    spool.close()


def test_a_second_process_on_the_same_host_takes_the_next_name(tmp_path: Path) -> None:
    one, two = SpoolFile(tmp_path, "gw", 1 << 20), SpoolFile(tmp_path, "gw", 1 << 20)
    one.open()
    two.open()
    assert (one.instance, two.instance) == ("gw", "gw-1")
    one.close()
    again = SpoolFile(tmp_path, "gw", 1 << 20)
    again.open()  # a restarted instance takes its name back (and so its predecessor's spool)
    assert again.instance == "gw"
    two.close()
    again.close()


def test_status_counts_torn_bytes_and_dead_letters(tmp_path: Path) -> None:
    frame = encode_frame(entry())
    (tmp_path / "gw.spool").write_bytes(frame + frame[:10])
    (tmp_path / "gw.dead.jsonl").write_bytes(b'{"error": "x"}\n{"error": "y"}\n')
    status = spool_status(tmp_path)
    assert (status.pending_records, status.torn_bytes, status.dead_letters) == (1, 10, 2)
