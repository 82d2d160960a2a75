"""The Redis ledger: the hot copy of each balance and its open reservations, moved by atomic Lua scripts.

Per user (one hash tag, so a cluster keeps them on one slot):
  sg:{u}:acct  hash  bal = settled balance, held = Σ open reservations, ver = version of the loaded snapshot
  sg:{u}:res   hash  request_id → reserved amount
  sg:{u}:exp   zset  request_id → expiry (ms); expired reservations stop counting at the next script run
  sg:{u}:pend  hash  version → delta, for postings committed before the snapshot was loaded

Why versions: the balance is loaded lazily from credit_accounts, while other requests may be committing
postings. Every posting bumps credit_accounts.version in its own transaction (the row lock orders them),
so a snapshot taken at version V holds exactly the postings ≤ V. A posting applies to Redis only if its
version is above the snapshot's, and one that arrives before any snapshot waits in `pend` — so no
posting is counted twice or lost, whatever the interleaving.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.billing.ledger.base import HotMove, InsufficientCredit, Reservation
from storage.billing.ledger.entries import account_state
from storage.billing.ledger.retry import HotMoveRetryQueue

_PURGE = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
for _, rid in ipairs(expired) do
  local amt = redis.call('HGET', KEYS[2], rid)
  if amt then
    redis.call('HINCRBY', KEYS[1], 'held', -tonumber(amt))
    redis.call('HDEL', KEYS[2], rid)
  end
  redis.call('ZREM', KEYS[3], rid)
end
"""

# KEYS: acct, res, exp   ARGV: now_ms, request_id, amount, expires_ms
# → {-1, 0} not loaded; {0, available} refused; {1, available_after} held
_RESERVE = (
    """
if redis.call('HEXISTS', KEYS[1], 'bal') == 0 then return {-1, 0} end
"""
    + _PURGE
    + """
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
local bal = tonumber(redis.call('HGET', KEYS[1], 'bal'))
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return {1, bal - held} end
local amount = tonumber(ARGV[3])
if bal - held < amount then return {0, bal - held} end
redis.call('HINCRBY', KEYS[1], 'held', amount)
redis.call('HSET', KEYS[2], ARGV[2], amount)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return {1, bal - held - amount}
"""
)

# KEYS: acct, pend   ARGV: balance, version, force ('1': ignore the floor)
# → 1 loaded, 0 already loaded, -1 refused: older than a posting a stale mark said it must hold
_LOAD = """
if redis.call('HEXISTS', KEYS[1], 'bal') == 1 then return 0 end
local snapshot_version = tonumber(ARGV[2])
if ARGV[3] ~= '1' and snapshot_version < tonumber(redis.call('HGET', KEYS[1], 'floor') or '0') then
  return -1
end
local bal = tonumber(ARGV[1])
local pending = redis.call('HGETALL', KEYS[2])
for i = 1, #pending, 2 do
  if tonumber(pending[i]) > snapshot_version then bal = bal + tonumber(pending[i + 1]) end
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'bal', bal, 'ver', snapshot_version)
if redis.call('HEXISTS', KEYS[1], 'held') == 0 then redis.call('HSET', KEYS[1], 'held', 0) end
return 1
"""

# KEYS: acct, res, exp, pend   ARGV: request_id ('' for none), delta, version ('' for none)
_SETTLE = """
if ARGV[1] ~= '' then
  local amt = redis.call('HGET', KEYS[2], ARGV[1])
  if amt then
    redis.call('HINCRBY', KEYS[1], 'held', -tonumber(amt))
    redis.call('HDEL', KEYS[2], ARGV[1])
  end
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if ARGV[3] == '' then return 0 end
if redis.call('HEXISTS', KEYS[1], 'bal') == 0 then
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[2])
  redis.call('EXPIRE', KEYS[4], 86400)
  return 2
end
if tonumber(ARGV[3]) <= tonumber(redis.call('HGET', KEYS[1], 'ver') or '0') then return 3 end
redis.call('HINCRBY', KEYS[1], 'bal', ARGV[2])
return 1
"""

# The heal of a post-commit move whose outcome is unknown (the connection died mid-call): re-sending it could
# count its posting twice (`ver` is the snapshot's version, not a high-water mark, since postings may arrive
# out of order), so the snapshot is marked stale instead — forgotten, and never reloaded below that posting's
# version (`floor`, checked by _LOAD), so the next use reloads it from the ledger, which holds the posting.
# Closing the reservation is idempotent, so it is simply done (again).
# KEYS: acct, res, exp   ARGV: request_id ('' for none), version ('' for none) → 1 marked stale, 0 not needed
_MARK_STALE = """
if ARGV[1] ~= '' then
  local amt = redis.call('HGET', KEYS[2], ARGV[1])
  if amt then
    redis.call('HINCRBY', KEYS[1], 'held', -tonumber(amt))
    redis.call('HDEL', KEYS[2], ARGV[1])
  end
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if ARGV[2] == '' then return 0 end
local version = tonumber(ARGV[2])
if version > tonumber(redis.call('HGET', KEYS[1], 'floor') or '0') then
  redis.call('HSET', KEYS[1], 'floor', version)
end
if redis.call('HEXISTS', KEYS[1], 'bal') == 1 and version <= tonumber(redis.call('HGET', KEYS[1], 'ver')) then
  return 0
end
redis.call('HDEL', KEYS[1], 'bal', 'ver')
return 1
"""

# KEYS: acct, res, exp   ARGV: now_ms → {loaded(0/1), bal, held}
_AVAILABLE = (
    """
if redis.call('HEXISTS', KEYS[1], 'bal') == 0 then return {0, 0, 0} end
"""
    + _PURGE
    + """
return {1, tonumber(redis.call('HGET', KEYS[1], 'bal')), tonumber(redis.call('HGET', KEYS[1], 'held') or '0')}
"""
)


def _keys(user_id: uuid.UUID) -> tuple[str, str, str, str]:
    tag = f"sg:{{{user_id}}}"
    return f"{tag}:acct", f"{tag}:res", f"{tag}:exp", f"{tag}:pend"


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisLedger:
    """CreditLedger on Redis; the scripts are loaded once and run by EVALSHA."""

    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        reservation_ttl_seconds: int,
        retry_queue_moves: int = 100_000,
    ) -> None:
        self._redis = redis
        self._engine = engine
        self._ttl_ms = reservation_ttl_seconds * 1000
        self._reserve = redis.register_script(_RESERVE)
        self._load = redis.register_script(_LOAD)
        self._settle = redis.register_script(_SETTLE)
        self._available = redis.register_script(_AVAILABLE)
        self._mark_stale = redis.register_script(_MARK_STALE)
        self._retry = HotMoveRetryQueue(self.mark_stale, self.forget, max_moves=retry_queue_moves)

    async def load_snapshot(self, user_id: uuid.UUID) -> None:
        """Load the user's balance from credit_accounts into Redis, unless it is there already."""
        acct, _res, _exp, pend = _keys(user_id)
        for attempt in range(3):
            async with self._engine.connect() as conn:
                balance, version = await account_state(conn, user_id)
            # Refused (-1) when a stale mark names a later posting than this read saw: read again. Only a
            # database restored to an older state keeps refusing; the database is the truth, so it wins.
            force = "1" if attempt == 2 else ""
            if int(await self._load(keys=[acct, pend], args=[balance, version, force])) != -1:
                return

    async def reserve(self, user_id: uuid.UUID, request_id: str, amount_nano: int) -> Reservation:
        acct, res, exp, _pend = _keys(user_id)
        for _ in range(2):
            now = _now_ms()
            outcome: Any = await self._reserve(
                keys=[acct, res, exp], args=[now, request_id, amount_nano, now + self._ttl_ms]
            )
            status, available = int(outcome[0]), int(outcome[1])
            if status == 1:
                return Reservation(user_id, request_id, amount_nano)
            if status == 0:
                raise InsufficientCredit(available, amount_nano)
            await self.load_snapshot(user_id)
        raise RuntimeError("credit snapshot did not load")  # pragma: no cover - load is unconditional

    async def release(self, reservation: Reservation) -> None:
        await self._settle(keys=list(_keys(reservation.user_id)), args=[reservation.request_id, 0, ""])

    async def settle_in_transaction(self, conn: Any, reservations: Sequence[Reservation]) -> None:
        return None  # Redis is moved after the commit, in after_commit

    async def after_commit(self, moves: Sequence[HotMove]) -> None:
        """Apply committed postings and close reservations in Redis; never raises for an outage.

        The postings are committed already, so a Redis failure here must not fail the caller: the users'
        snapshots are marked stale (reloaded from the ledger on next use) and the reservations closed — now
        if Redis answers, else from the bounded retry queue once it does.
        """
        try:
            await self._apply_moves(moves)
        except (RedisError, OSError) as exc:
            await self._heal(moves, exc)

    async def _heal(self, moves: Sequence[HotMove], error: BaseException) -> None:
        """Mark the moves' snapshots stale now if Redis answers, else queue that until it does."""
        try:
            await self.mark_stale(moves)
        except (RedisError, OSError):
            self._retry.put(moves, error)

    async def mark_stale(self, moves: Sequence[HotMove]) -> None:
        """Close the moves' reservations and forget the snapshots that may lack their postings (stale: the
        next use reloads them from the ledger, never from a read older than these postings)."""
        for m in moves:
            if m.reservation is None and m.version is None:
                continue
            request_id = m.reservation.request_id if m.reservation else ""
            version = "" if m.version is None else m.version
            await self._mark_stale(keys=list(_keys(m.user_id)[:3]), args=[request_id, version])

    async def _apply_moves(self, moves: Sequence[HotMove]) -> None:
        calls: list[tuple[list[str], list[str | int]]] = [
            (
                list(_keys(m.user_id)),
                [
                    m.reservation.request_id if m.reservation else "",
                    m.delta_nano,
                    "" if m.version is None else m.version,
                ],
            )
            for m in moves
            if m.reservation is not None or m.version is not None
        ]
        if len(calls) == 1:
            await self._settle(keys=calls[0][0], args=calls[0][1])
            return
        if not calls:
            return
        # Many at once: one pipelined round trip of EVALSHA (the script is loaded on first use).
        pipe = self._redis.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(self._settle.sha, len(keys), *keys, *args)
        try:
            await pipe.execute()
        except NoScriptError:  # not loaded yet, or Redis lost it (restart, SCRIPT FLUSH): none ran
            for keys, args in calls:
                await self._settle(keys=keys, args=args)

    @property
    def pending_moves(self) -> int:
        """Hot-copy moves waiting for Redis to answer again (0 when the copy is up to date)."""
        return len(self._retry)

    async def available(self, user_id: uuid.UUID) -> int:
        acct, res, exp, _pend = _keys(user_id)
        for _ in range(2):
            loaded, bal, held = (
                int(x) for x in await self._available(keys=[acct, res, exp], args=[_now_ms()])
            )
            if loaded:
                return bal - held
            await self.load_snapshot(user_id)
        raise RuntimeError("credit snapshot did not load")  # pragma: no cover

    async def hot_balance(self, user_id: uuid.UUID) -> int | None:
        """The settled balance Redis holds, or None when it has no snapshot (for reconcile)."""
        value = await self._redis.hget(_keys(user_id)[0], "bal")
        return None if value is None else int(value)

    async def forget(self, user_id: uuid.UUID) -> None:
        """Drop the hot copy of a user's balance; the next use reloads it from the database."""
        acct, _res, _exp, pend = _keys(user_id)
        await self._redis.hdel(acct, "bal", "ver")
        await self._redis.delete(pend)

    async def rebuild_hot_copy(self, user_id: uuid.UUID) -> None:
        """Reload a user's hot copy from the database (the truth)."""
        await self.forget(user_id)
        await self.load_snapshot(user_id)

    async def close(self) -> None:
        """Try the queued hot-copy moves once more, then stop retrying (the Redis client is the app's)."""
        await self._retry.close()
