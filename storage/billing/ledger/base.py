"""The credit ledger interface: reserve before the upstream call, settle or release after it.

The database ledger (billing_events + credit_accounts) is the truth. A `CreditLedger` keeps the balance
that admission control reads and the open reservations: in Redis (`RedisLedger`) or in the database
itself when no Redis is configured (`SqlLedger`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from storage.billing.ledger.limits import LimitHold, LimitRequest


@dataclass(frozen=True, slots=True)
class Reservation:
    """Credit held for one request until it is settled, released, or expires."""

    user_id: uuid.UUID
    request_id: str
    amount_nano: int
    limits: LimitHold | None = None  # what it holds against rate limits and budgets, settled with it


@dataclass(frozen=True, slots=True)
class HotMove:
    """What the hot copy must learn after a commit: a reservation to close and/or a posting to apply.

    `version` is the account version the posting produced (None: nothing was posted for this user here).
    `limits_actual` (charged nano-USD, tokens): the recorded figures the reservation's limit holds settle to
    — a ledger may settle them in the same round trip (then its `settle_limits` for that request is a no-op).
    None: nothing to settle here (no limit holds, or a replayed record, which settled when first recorded).
    """

    user_id: uuid.UUID
    reservation: Reservation | None
    delta_nano: int
    version: int | None
    limits_actual: tuple[int, int] | None = None


class InsufficientCredit(Exception):
    """The user's available balance does not cover the request's worst-case cost."""

    def __init__(self, available_nano: int, needed_nano: int) -> None:
        super().__init__(f"available {available_nano} nano-USD, needed {needed_nano}")
        self.available_nano = available_nano
        self.needed_nano = needed_nano


class CreditLedger(Protocol):
    async def reserve(
        self, user_id: uuid.UUID, request_id: str, amount_nano: int, limits: LimitRequest | None = None
    ) -> Reservation:
        """Hold `amount_nano` and the request's limits atomically; InsufficientCredit or LimitExceeded
        (holding nothing) if short. A negative balance admits nothing, not even a zero amount."""
        ...

    async def window_usage(
        self, scope: str, now: datetime, conn: AsyncConnection | None = None, owner: uuid.UUID | None = None
    ) -> tuple[int, int]:
        """(requests, tokens) a scope has used in the minute window of `now`, across every instance
        (`conn`: the caller's open connection, which the SQL ledger reads through; `owner`: the user a key
        scope belongs to, whose hash tag the Redis ledger keeps the key's counters under)."""
        ...

    async def settle_limits(self, reservation: Reservation, actual_nano: int, actual_tokens: int) -> None:
        """Settle what a recorded request held against its limits to its actual cost and tokens; and end
        its lease (idempotent). A no-op for the limits when `after_commit` settled them with the commit's
        hot move (`HotMove.limits_actual`)."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Drop a reservation without charging (idempotent)."""
        ...

    async def settle_in_transaction(self, conn: AsyncConnection, reservations: Sequence[Reservation]) -> None:
        """Close reservations inside the transaction that posts their requests' debits."""
        ...

    async def after_commit(self, moves: Sequence[HotMove]) -> None:
        """Bring the hot copy up to committed postings, close the moves' reservations and settle their limit
        holds (`limits_actual`), in one round trip where it can."""
        ...

    async def available(self, user_id: uuid.UUID) -> int:
        """Balance minus open reservations, in nano-USD."""
        ...

    async def hot_balance(self, user_id: uuid.UUID) -> int | None:
        """The settled balance the hot copy holds; None when there is no separate copy (or none loaded)."""
        ...

    async def rebuild_hot_copy(self, user_id: uuid.UUID) -> None:
        """Rebuild a user's hot copy from the database ledger (a no-op when there is no separate copy)."""
        ...

    async def reservation_counts(self) -> tuple[int, int]:
        """(open, orphaned) reservations over every user; orphaned: past their lease, not yet released."""
        ...

    async def release_orphans(self) -> int:
        """Release every orphaned reservation (a dead instance's); how many were released."""
        ...

    async def close(self) -> None: ...
