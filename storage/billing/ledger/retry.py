"""The hot copy's retry queue: post-commit moves that Redis did not take, healed once it answers again.

Healing a move (`RedisLedger.mark_stale`) closes its reservation — idempotent: a closed reservation closes
nothing twice — and marks its user's snapshot stale, so the next use reloads it from the ledger (the version
rule makes that safe, and safe to repeat). The queue is bounded: past `max_moves` the oldest moves are
dropped (one log line) and their users' snapshots are forgotten once Redis answers; their reservations then
expire by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from storage.billing.ledger.base import HotMove

log = logging.getLogger("synapgate.ledger")

ApplyMoves = Callable[[Sequence[HotMove]], Awaitable[None]]
ForgetSnapshot = Callable[[uuid.UUID], Awaitable[None]]


class HotMoveRetryQueue:
    """Bounded in-process queue of hot-copy moves, drained by one task with backoff until healed."""

    def __init__(
        self,
        apply: ApplyMoves,
        forget: ForgetSnapshot | None = None,
        *,
        max_moves: int = 100_000,
        first_delay: float = 0.05,
        max_delay: float = 1.0,
        batch: int = 500,
    ) -> None:
        self._apply = apply
        self._forget = forget
        self._stale: set[uuid.UUID] = set()  # users whose dropped moves their snapshot never got
        self._moves: deque[HotMove] = deque()
        self._max = max_moves
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self._failing = False

    def __len__(self) -> int:
        return len(self._moves)

    @property
    def stale_users(self) -> int:
        """Users whose snapshot waits to be forgotten (their moves were dropped from a full queue)."""
        return len(self._stale)

    def put(self, moves: Sequence[HotMove], error: BaseException) -> None:
        """Queue moves that failed with `error`, and make sure the drain task runs."""
        if not moves:
            return
        if not self._failing:
            self._failing = True
            log.warning(
                "Redis did not take a post-commit move; queued for retry (the record stands)",
                extra={"error": f"{type(error).__name__}: {error}"[:300]},
            )
        overflow = len(self._moves) + len(moves) - self._max
        if overflow > 0:
            for _ in range(min(overflow, len(self._moves))):
                self._stale.add(self._moves.popleft().user_id)
            for move in list(moves)[: max(0, len(moves) - self._max)]:
                self._stale.add(move.user_id)
            self.dropped += overflow
            log.error(
                "hot-copy retry queue full: %d moves dropped; their users' snapshots are reloaded from the "
                "ledger once Redis answers (or run `synapgate ledger reconcile --fix`)",
                overflow,
            )
        self._moves.extend(list(moves)[-self._max :])
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="synapgate-hot-retry")

    async def _drain(self) -> None:
        delay = self._first_delay
        while self._moves or (self._stale and self._forget is not None):
            await asyncio.sleep(delay)
            delay = self._first_delay if await self.flush() else min(delay * 2, self._max_delay)

    async def flush(self) -> bool:
        """Try to apply everything queued now; True when the queue is empty."""
        while self._moves:
            chunk = [self._moves[i] for i in range(min(self._batch, len(self._moves)))]
            try:
                await self._apply(chunk)
            except Exception:  # still unreachable (logged once, when the failures began)
                return False
            for _ in chunk:
                self._moves.popleft()
        while self._stale and self._forget is not None:
            user_id = next(iter(self._stale))
            try:
                await self._forget(user_id)  # stale: the next use reloads it from the ledger
            except Exception:
                return False
            self._stale.discard(user_id)
        if self._failing:
            self._failing = False
            log.warning("Redis took the queued post-commit moves again; the hot copy is up to date")
        return True

    async def close(self) -> None:
        """One last flush, then stop the drain task (what is left is rebuilt from the ledger on demand)."""
        if self._moves or self._stale:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), 2.0)
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
