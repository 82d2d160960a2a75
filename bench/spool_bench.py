"""The spool's append path (issue 10): what a request waits for while PostgreSQL is unreachable.

An append is one length+CRC frame written and fsynced before the answer; appends waiting together share one
fsync. Measures one at a time and 16 concurrent, on a real file in `--dir` (default: a temporary directory).

    .venv/bin/python bench/spool_bench.py [--dir /path/on/the/spool/disk] [--records 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from pricing.cost import Usage
from storage.types import utcnow
from storage.usage.recorder import CompletionRecord
from storage.usage.spool import SpooledRecord, SpoolFile, encode_frame


def _frame() -> bytes:
    record = CompletionRecord(
        request_id=f"req_{uuid.uuid4().hex}",
        user_id=uuid.uuid4(),
        workspace_id=uuid.uuid4(),
        api_key_id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        llm_id=1,
        model="gpt-4o-mini",
        provider="openai",
        price_version=1,
        usage=Usage(prompt_tokens=120, completion_tokens=40),
        cost_nano=42_000,
        charged_nano=42_000,
        byok=False,
        is_stream=False,
        status="success",
        latency_ms=250,
        created_at=utcnow(),
    )
    return encode_frame(SpooledRecord(record, utcnow(), "bench"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="spool-bench-"))
    spool = SpoolFile(directory, f"bench-{uuid.uuid4().hex[:6]}", 1 << 34)
    spool.open()
    frames = [_frame() for _ in range(args.records)]
    alone = frames[: args.records // 4]
    started = time.perf_counter()
    for frame in alone:
        await spool.append(frame)
    one = (time.perf_counter() - started) / len(alone)
    rest = frames[len(alone) :]
    gate = asyncio.Semaphore(16)

    async def append(frame: bytes) -> None:
        async with gate:
            await spool.append(frame)

    started = time.perf_counter()
    await asyncio.gather(*(append(frame) for frame in rest))
    together = time.perf_counter() - started
    spool.close()
    print(f"frame: {len(frames[0])} bytes (a completion record without content)")
    print(f"one at a time: {one * 1000:.2f} ms per append (write + fsync)")
    print(f"16 concurrent: {len(rest)} appends in {together:.2f} s = {len(rest) / together:,.0f} appends/s")


if __name__ == "__main__":
    asyncio.run(main())
