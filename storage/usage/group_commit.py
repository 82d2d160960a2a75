"""Group commit: concurrent requests' records written together, each answer released after its commit.

One writer task takes every record queued while the previous batch was committing and writes them
with `record_batch` in one transaction: one fsync, one account move per user, a handful of round trips
for the whole batch. A lone request is a batch of one, so nothing waits on a timer. If a batch fails,
its records are retried one by one, so one bad record (a foreign conversation id, say) fails alone —
unless the database is unreachable: then the whole batch fails at once (no retry storm, no log per record).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.billing.ledger.base import CreditLedger, Reservation
from storage.outage import is_outage
from storage.usage.recorder import CompletionRecord, RecordResult, record_batch, record_completion

log = logging.getLogger("synapgate.recorder")


@dataclass(slots=True)
class _Pending:
    record: CompletionRecord
    reservation: Reservation | None
    done: asyncio.Future[RecordResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommitRecorder:
    """Records completions through one writer task that batches whatever is waiting."""

    def __init__(self, engine: AsyncEngine, ledger: CreditLedger, max_batch: int = 256) -> None:
        self._engine = engine
        self._ledger = ledger
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._run(), name="synapgate-group-commit")

    async def stop(self) -> None:
        """Write everything already queued, then stop (no record is dropped at shutdown)."""
        if self._writer is None:
            return
        await self._queue.put(None)
        await self._writer
        self._writer = None

    async def record(self, record: CompletionRecord, reservation: Reservation | None) -> RecordResult:
        """Queue a record and wait until it is committed (or its write failed: the error is raised)."""
        if self._writer is None or self._writer.done():
            return await record_completion(self._engine, self._ledger, record, reservation)
        pending = _Pending(record, reservation)
        await self._queue.put(pending)
        return await pending.done

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            results = await record_batch(
                self._engine, self._ledger, [(p.record, p.reservation) for p in batch]
            )
        except Exception as exc:
            if len(batch) == 1 or is_outage(exc):  # the database is unreachable: one by one would fail too
                for pending in batch:
                    _settle(pending, error=exc)
                return
            log.warning(
                "group commit of %d records failed; writing them one by one", len(batch), exc_info=exc
            )
            for pending in batch:
                try:
                    result = await record_completion(
                        self._engine, self._ledger, pending.record, pending.reservation
                    )
                except Exception as one:
                    _settle(pending, error=one)
                else:
                    _settle(pending, result=result)
            return
        for pending, result in zip(batch, results, strict=True):
            _settle(pending, result=result)


def _settle(
    pending: _Pending, *, result: RecordResult | None = None, error: BaseException | None = None
) -> None:
    if pending.done.done():  # the waiting request was cancelled; its record is committed (or not) regardless
        return
    if error is not None:
        pending.done.set_exception(error)
    else:
        assert result is not None
        pending.done.set_result(result)
