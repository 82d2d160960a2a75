"""The Redis ledger: the hot copy of each balance and its open reservations, moved by atomic Lua scripts.

Per user (one hash tag, so a cluster keeps them on one slot):
  sg:{u}:acct  hash  bal = settled balance, held = Σ open reservations, ver = version of the loaded snapshot
  sg:{u}:res   hash  request_id → reserved amount
  sg:{u}:exp   zset  request_id → expiry (ms); expired reservations stop counting at the next script run
  sg:{u}:pend  hash  version → delta, for postings committed before the snapshot was loaded
  sg:{u}:spool hash  request_id → debit of a record in the local spool (PostgreSQL was down): counted in `bal`
                     but not yet in the ledger (storage/usage/spool.py; "Spooled debits" below)

Why versions: the balance is loaded lazily from credit_accounts, while other requests may be committing
postings. Every posting bumps credit_accounts.version in its own transaction (the row lock orders them),
so a snapshot taken at version V holds exactly the postings ≤ V. A posting applies to Redis only if its
version is above the snapshot's, and one that arrives before any snapshot waits in `pend` — so no
posting is counted twice or lost, whatever the interleaving.

Limits (per scope `k:<key>`, `u:<user>`, `w:<workspace>`, shared by every instance). A key's and a user's
limit keys carry the hash tag of the user the request is for (a key belongs to one user), so they share the
user's slot with the credit keys; a workspace spans users, so its keys carry the workspace's own tag:
  sg:{u}:lim:k:<key>:r:<minute>     requests counted in that minute window (expires after two minutes)
  sg:{u}:lim:k:<key>:t:<minute>     tokens: the worst case at reserve, moved to the actual at settle
  sg:{u}:lim:k:<key>:b:<period>     hash  spent = settled spend of the period, held = Σ open holds
  sg:{u}:lim:k:<key>:b:<period>:h   hash  request_id → held amount;  …:x zset request_id → expiry (ms)
  sg:{u}:lim:u:<u>:…                the same for the user's own limits
  sg:lim:{w:<workspace>}:…          the same for a workspace's (r, t, b, b:h, b:x)
A limited request runs one script (_RESERVE_LIMITED) over the user's credit keys and every limit key of its
scopes, so the credit and each limit are checked and held in one atomic step; after its record commits, one
script (_SETTLE_WITH_LIMITS) closes the credit reservation and settles the limit holds to the actual figures.
`spent` is loaded lazily from usage_logs (Σ charged_nano of the period): a settle that lands between that read
and the load is not counted in Redis (an undercount of at most the requests settling in that instant; the SQL
ledger has no such window).

Redis Cluster (SYNAPGATE_REDIS_CLUSTER): every script touches one slot. Credit-only requests and requests
whose limits are only the key's and the user's stay one script on the user's slot, as on a single Redis. A
request with workspace limits takes two: _HOLD_LIMITS holds the workspace's limits on the workspace's slot
first, then the user's script holds the credit and the rest; if that one refuses (credit, key or user limit)
or fails, the workspace hold is undone (_RELEASE_LIMITS). Each limit is checked and held atomically on its own
slot before the request is admitted, so nothing is admitted past any limit. The transient effect is
conservative only: from the workspace hold until its undo (one round trip; a lease for the budget hold and the
rest of the minute for the counters, if the process dies in between or the undo does not reach Redis) the
workspace counts a request that is then refused, so another request may be refused that would have fitted.
And a request refused by both its workspace's limit and its credit (or key/user limit) is refused by the
workspace's (checked first there; on a single Redis the credit's 402 comes first).
Settlement is two scripts too (the user's slot and the workspace's), run concurrently. The single-Redis path
is unchanged: one script each way, and a batch's moves one pipelined round trip (a cluster pipeline cannot
carry scripts: there the moves' scripts run concurrently, one per slot).

Spooled debits: a record spooled while PostgreSQL is unreachable has no ledger version yet, so its debit
cannot follow the version rule. It is applied to `bal` at once and kept in `spool` until its replay commits
at version V; that move takes it out of `spool` and applies the posting under the version rule: V above the
snapshot's version → `bal` += delta − spooled (0: it was counted already); V at or below it (the snapshot
was loaded after the replay committed, so it holds the posting and counted the spool entry too) → `bal` −=
spooled; no snapshot → `pend` as usual. A snapshot load adds Σ `spool` to the ledger balance, except the
entries whose request id is already in usage_logs in the same database snapshot as the balance read (those
it deletes): so a replay whose Redis move was lost, a record that landed although its commit looked failed,
and any order of load and move count each debit exactly once.

Leases: a reservation (and its budget holds) expires one lease after it was made or last renewed; the ledger
renews its own open reservations every third of a lease, so a dead instance's are freed within a lease.
The sweep (reservation_counts, release_orphans) scans `sg:{*}:exp`: on a cluster, on every primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.billing.ledger.base import HotMove, InsufficientCredit, Reservation
from storage.billing.ledger.entries import account_state
from storage.billing.ledger.limits import (
    LimitExceeded,
    LimitHold,
    LimitRequest,
    RateStatus,
    ScopeLimits,
    period_bounds,
    period_tag,
    retry_after_seconds,
    window_reset_seconds,
    window_start,
)
from storage.billing.ledger.retry import HotMoveRetryQueue
from storage.models import UsageLog, table_of
from storage.types import utcnow

# A client of one Redis (or a primary with replicas) or of a Redis Cluster (SYNAPGATE_REDIS_CLUSTER).
RedisClient = Redis | RedisCluster

# What Redis raises when it does not answer: a cluster client whose nodes are all unreachable raises
# RedisClusterException ("cannot be connected"), which is not a RedisError.
_UNREACHABLE = (RedisError, RedisClusterException, OSError)

usage = table_of(UsageLog)
_USAGE_COLUMN = {"k": usage.c.api_key_id, "u": usage.c.user_id, "w": usage.c.workspace_id}

# Expired reservations stop counting. One that expired unsettled belonged to an instance that died (a live one
# renews its lease), maybe after committing its request's debit but before moving this copy: the snapshot is
# dropped, so the caller reloads it from the ledger (the version rule makes a reload always safe).
_PURGE = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
local purged = 0
for _, rid in ipairs(expired) do
  local amt = redis.call('HGET', KEYS[2], rid)
  if amt then
    redis.call('HINCRBY', KEYS[1], 'held', -tonumber(amt))
    redis.call('HDEL', KEYS[2], rid)
    purged = purged + 1
  end
  redis.call('ZREM', KEYS[3], rid)
end
if purged > 0 then
  redis.call('HDEL', KEYS[1], 'bal', 'ver')
  return STALE
end
"""

# KEYS: acct, res, exp   ARGV: now_ms, request_id, amount, expires_ms
# → {-1, 0} not loaded; {0, available} refused; {1, available_after} held
_RESERVE = (
    """
if redis.call('HEXISTS', KEYS[1], 'bal') == 0 then return {-1, 0} end
"""
    + _PURGE.replace("STALE", "{-1, 0}")
    + """
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
local bal = tonumber(redis.call('HGET', KEYS[1], 'bal'))
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return {1, bal - held} end
local amount = tonumber(ARGV[3])
if bal - held < amount then return {0, bal - held} end
if amount == 0 then return {1, bal - held} end  -- checked (a negative balance refuses it); nothing to hold
redis.call('HINCRBY', KEYS[1], 'held', amount)
redis.call('HSET', KEYS[2], ARGV[2], amount)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return {1, bal - held - amount}
"""
)

# Every limit of a set of scopes checked, then held: Lua functions over KEYS from kb + 1, ARGV from ab + 1.
# KEYS per scope: rpm, tpm, budget, budget holds, budget expiries; ARGV per scope: rpm, tpm, budget (-1: none)
# check_limits → nil (all fit) or the refusal: {-2, i} budget i not loaded, {-3|-4|-5, i, used} requests/
# tokens/budget of scope i refused; hold_limits → the first scope's requests and tokens after the hold.
_LIMIT_FUNCTIONS = """
local function check_limits(kb, ab, n, now, tokens, amount)
  for i = 1, n do
    local k = kb + (i - 1) * 5
    local a = ab + (i - 1) * 3
    local rpm, tpm, bud = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    if rpm >= 0 then
      local used = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
      if used + 1 > rpm then return {-3, i, used} end
    end
    if tpm >= 0 then
      local used = tonumber(redis.call('GET', KEYS[k + 2]) or '0')
      if used + tokens > tpm then return {-4, i, used} end
    end
    if bud >= 0 then
      if redis.call('HEXISTS', KEYS[k + 3], 'spent') == 0 then return {-2, i} end
      local expired = redis.call('ZRANGEBYSCORE', KEYS[k + 5], '-inf', now)
      for _, rid in ipairs(expired) do
        local amt = redis.call('HGET', KEYS[k + 4], rid)
        if amt then
          redis.call('HINCRBY', KEYS[k + 3], 'held', 0 - tonumber(amt))
          redis.call('HDEL', KEYS[k + 4], rid)
        end
        redis.call('ZREM', KEYS[k + 5], rid)
      end
      local used = tonumber(redis.call('HGET', KEYS[k + 3], 'spent'))
        + tonumber(redis.call('HGET', KEYS[k + 3], 'held') or '0')
      if used + amount > bud then return {-5, i, used} end
    end
  end
  return nil
end

local function hold_limits(kb, ab, n, tokens, amount, rid, expires, window_ttl, budget_ttl)
  local first_requests, first_tokens = 0, 0
  for i = 1, n do
    local k = kb + (i - 1) * 5
    local a = ab + (i - 1) * 3
    local rpm, tpm, bud = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    if rpm >= 0 or tpm >= 0 then
      local r = redis.call('INCR', KEYS[k + 1])
      local t = redis.call('INCRBY', KEYS[k + 2], tokens)
      redis.call('EXPIRE', KEYS[k + 1], window_ttl)
      redis.call('EXPIRE', KEYS[k + 2], window_ttl)
      if i == 1 then first_requests, first_tokens = r, t end
    end
    -- a budget holds a request once: a repeated hold of the same request id (HSETNX refuses it) moves nothing
    if bud >= 0 and amount > 0 and redis.call('HSETNX', KEYS[k + 4], rid, amount) == 1 then
      redis.call('HINCRBY', KEYS[k + 3], 'held', amount)
      redis.call('ZADD', KEYS[k + 5], expires, rid)
      if tonumber(budget_ttl) > 0 then
        for j = 3, 5 do redis.call('EXPIRE', KEYS[k + j], budget_ttl) end
      end
    end
  end
  return first_requests, first_tokens
end
"""

# KEYS: acct, res, exp, then per scope: rpm, tpm, budget, budget holds, budget expiries
# ARGV: now_ms, request_id, amount, expires_ms, tokens, n_scopes, window_ttl_s, budget_ttl_s (0: none),
#       then per scope: rpm, tpm, budget (-1: no such limit)
# → {-1} credit not loaded; {-2, i} budget i not loaded; {0, available} credit refused;
#   {-3|-4|-5, i, used} requests/tokens/budget of scope i refused; {1, available_after, requests, tokens} held
_RESERVE_LIMITED = (
    _LIMIT_FUNCTIONS
    + """
if redis.call('HEXISTS', KEYS[1], 'bal') == 0 then return {-1, 0} end
"""
    + _PURGE.replace("STALE", "{-1, 0}")
    + """
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
local bal = tonumber(redis.call('HGET', KEYS[1], 'bal'))
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return {1, bal - held, 0, 0} end
local amount = tonumber(ARGV[3])
if bal - held < amount then return {0, bal - held} end
local tokens = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local refused = check_limits(3, 8, n, tonumber(ARGV[1]), tokens, amount)
if refused then return refused end
if amount > 0 then  -- a zero amount holds nothing (Lua's -0 would not be an integer to Redis)
  redis.call('HINCRBY', KEYS[1], 'held', amount)
  redis.call('HSET', KEYS[2], ARGV[2], amount)
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
end
local r, t = hold_limits(3, 8, n, tokens, amount, ARGV[2], ARGV[4], ARGV[7], ARGV[8])
return {1, bal - held - amount, r, t}
"""
)

# The limits of scopes on a slot of their own (a workspace's, on a cluster): held before the user's script,
# released by _RELEASE_LIMITS if that refuses. KEYS per scope as _RESERVE_LIMITED; ARGV the same as it
# (the credit's amount is what each budget holds) → {-2, i}, {-3|-4|-5, i, used} or {1, 0, requests, tokens}
_HOLD_LIMITS = (
    _LIMIT_FUNCTIONS
    + """
local tokens, amount, n = tonumber(ARGV[5]), tonumber(ARGV[3]), tonumber(ARGV[6])
local refused = check_limits(0, 8, n, tonumber(ARGV[1]), tokens, amount)
if refused then return refused end
local r, t = hold_limits(0, 8, n, tokens, amount, ARGV[2], ARGV[4], ARGV[7], ARGV[8])
return {1, 0, r, t}
"""
)

# Undo a _HOLD_LIMITS whose request the user's script refused: the request and its tokens leave the window
# counters, the budget holds are dropped (idempotent for budgets; the caller undoes the counters once).
# KEYS per scope: rpm, tpm, budget, budget holds, budget expiries
# ARGV: request_id, tokens, n_scopes, then per scope: counts_window (0/1), has_budget (0/1)
_RELEASE_LIMITS = """
for i = 1, tonumber(ARGV[3]) do
  local k = (i - 1) * 5
  local a = 3 + (i - 1) * 2
  if ARGV[a + 1] == '1' then
    if redis.call('EXISTS', KEYS[k + 1]) == 1 then redis.call('DECR', KEYS[k + 1]) end
    if tonumber(ARGV[2]) ~= 0 and redis.call('EXISTS', KEYS[k + 2]) == 1 then
      redis.call('DECRBY', KEYS[k + 2], ARGV[2])
    end
  end
  if ARGV[a + 2] == '1' then
    local amt = redis.call('HGET', KEYS[k + 4], ARGV[1])
    if amt then
      redis.call('HINCRBY', KEYS[k + 3], 'held', 0 - tonumber(amt))
      redis.call('HDEL', KEYS[k + 4], ARGV[1])
    end
    redis.call('ZREM', KEYS[k + 5], ARGV[1])
  end
end
return 1
"""

# The settlement of a request's limit holds, as a Lua function over KEYS from kb + 1 and ARGV from ab + 1:
# KEYS: per scope: tpm window, budget, budget holds, budget expiries
# ARGV: request_id, token_delta, actual_nano, n_scopes, then per scope: counts_window (0/1), has_budget (0/1)
# Idempotent for budgets: a budget's spend moves only when this call removed the request's hold. (The token
# delta is not: it runs once per request, with the commit's hot move or from settle_limits.)
_SETTLE_LIMITS_FUNCTION = """
local function settle_limits(kb, ab)
  local n = tonumber(ARGV[ab + 4])
  for i = 1, n do
    local k = kb + (i - 1) * 4
    local a = ab + 4 + (i - 1) * 2
    if ARGV[a + 1] == '1' and tonumber(ARGV[ab + 2]) ~= 0 and redis.call('EXISTS', KEYS[k + 1]) == 1 then
      redis.call('INCRBY', KEYS[k + 1], ARGV[ab + 2])
    end
    if ARGV[a + 2] == '1' then
      local amt = redis.call('HGET', KEYS[k + 3], ARGV[ab + 1])
      if amt then
        redis.call('HINCRBY', KEYS[k + 2], 'held', 0 - tonumber(amt))
        redis.call('HDEL', KEYS[k + 3], ARGV[ab + 1])
        redis.call('ZREM', KEYS[k + 4], ARGV[ab + 1])
        if redis.call('HEXISTS', KEYS[k + 2], 'spent') == 1 then
          redis.call('HINCRBY', KEYS[k + 2], 'spent', ARGV[ab + 3])
        end
      end
    end
  end
end
"""
_SETTLE_LIMITS = _SETTLE_LIMITS_FUNCTION + "settle_limits(0, 0)\nreturn 1\n"

# KEYS: acct, pend, spool   ARGV: balance, version, force ('1': ignore the floor), then the request ids of
# spooled records already in usage_logs at that balance's snapshot (their spool entries are dropped)
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
if KEYS[3] then
  for i = 4, #ARGV do redis.call('HDEL', KEYS[3], ARGV[i]) end
  for _, amount in ipairs(redis.call('HVALS', KEYS[3])) do bal = bal + tonumber(amount) end
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

# A limited request's commit: its limit holds (KEYS from 5, ARGV from 4, as _SETTLE_LIMITS), then its credit
# (KEYS 1-4 and ARGV 1-3, as _SETTLE) — one script, so limits cost no round trip of their own.
_SETTLE_WITH_LIMITS = _SETTLE_LIMITS_FUNCTION + "settle_limits(4, 3)\n" + _SETTLE

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

# A record spooled (PostgreSQL unreachable): close its reservation and apply its debit now, kept in `spool`
# until its replay gives it a ledger version. Idempotent (HSETNX).
# KEYS: acct, res, exp, spool   ARGV: request_id, delta
_SETTLE_SPOOLED = """
local amt = redis.call('HGET', KEYS[2], ARGV[1])
if amt then
  redis.call('HINCRBY', KEYS[1], 'held', -tonumber(amt))
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('HSETNX', KEYS[4], ARGV[1], ARGV[2]) == 1 and redis.call('HEXISTS', KEYS[1], 'bal') == 1 then
  redis.call('HINCRBY', KEYS[1], 'bal', ARGV[2])
end
return 1
"""

# A replayed batch committed this user's postings at `version`: take its records out of `spool` and apply the
# posting under the version rule, minus what `bal` already counted of it ("Spooled debits" above).
# KEYS: acct, pend, spool   ARGV: delta, version, request ids of the user's replayed records
_SETTLE_REPLAYED = """
local spooled = 0
for i = 3, #ARGV do
  local amount = redis.call('HGET', KEYS[3], ARGV[i])
  if amount then
    spooled = spooled + tonumber(amount)
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
if redis.call('HEXISTS', KEYS[1], 'bal') == 0 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], 86400)
  return 2
end
if tonumber(ARGV[2]) <= tonumber(redis.call('HGET', KEYS[1], 'ver') or '0') then
  redis.call('HINCRBY', KEYS[1], 'bal', -spooled)
  return 3
end
redis.call('HINCRBY', KEYS[1], 'bal', tonumber(ARGV[1]) - spooled)
return 1
"""

# KEYS: acct, res, exp   ARGV: now_ms → {loaded(0/1), bal, held}
_AVAILABLE = (
    """
if redis.call('HEXISTS', KEYS[1], 'bal') == 0 then return {0, 0, 0} end
"""
    + _PURGE.replace("STALE", "{0, 0, 0}")
    + """
return {1, tonumber(redis.call('HGET', KEYS[1], 'bal')), tonumber(redis.call('HGET', KEYS[1], 'held') or '0')}
"""
)


def _keys(user_id: uuid.UUID) -> tuple[str, str, str, str]:
    tag = f"sg:{{{user_id}}}"
    return f"{tag}:acct", f"{tag}:res", f"{tag}:exp", f"{tag}:pend"


def _spool_key(user_id: uuid.UUID) -> str:
    return f"sg:{{{user_id}}}:spool"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _shared(scope: str) -> bool:
    """A scope whose limits span users (a workspace's): its keys have their own hash tag, not a user's."""
    return scope.startswith("w:")


def _limit_keys(
    scope: str, owner: uuid.UUID, window: datetime, period: int
) -> tuple[str, str, str, str, str]:
    """rpm window, tpm window, budget, budget holds, budget expiries of one scope. A key's and a user's live
    under the user's hash tag (`owner`: the user the request or key belongs to), so the user's script holds
    them on the user's slot with the credit; a workspace's under its own tag."""
    base = f"sg:lim:{{{scope}}}" if _shared(scope) else f"sg:{{{owner}}}:lim:{scope}"
    minute = int(window.timestamp()) // 60
    budget = f"{base}:b:{period}"
    return f"{base}:r:{minute}", f"{base}:t:{minute}", budget, f"{budget}:h", f"{budget}:x"


# A script call: the script, its keys and args, and the limit settlement part it does (request id, part name).
_Call = tuple[Any, list[str], list[str | int], tuple[str, str] | None]
# One _SETTLE_LIMITS settlement of a reservation: part name ("all", "own", "shared"), keys, args.
_Part = tuple[str, list[str], list[str | int]]


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisLedger:
    """CreditLedger on Redis; the scripts are loaded once and run by EVALSHA."""

    # Nothing to do inside the recording transaction (reservations close after the commit), so the recorder
    # may write a batch in one round trip (`sg_record_usage`).
    closes_after_commit = True

    def __init__(
        self,
        redis: RedisClient,
        engine: AsyncEngine,
        reservation_ttl_seconds: int,
        lease_seconds: int = 30,
        retry_queue_moves: int = 100_000,
    ) -> None:
        self._redis = redis
        # On a cluster a workspace's limits (their own slot) are held by a script of their own.
        self._cluster = isinstance(redis, RedisCluster)
        self._engine = engine
        self._ttl_ms = reservation_ttl_seconds * 1000
        self._lease_ms = lease_seconds * 1000
        self._reserve = redis.register_script(_RESERVE)
        self._reserve_limited = redis.register_script(_RESERVE_LIMITED)
        self._hold_limits = redis.register_script(_HOLD_LIMITS)
        self._release_limits = redis.register_script(_RELEASE_LIMITS)
        self._settle_limits = redis.register_script(_SETTLE_LIMITS)
        self._settle_with_limits = redis.register_script(_SETTLE_WITH_LIMITS)
        self._load = redis.register_script(_LOAD)
        self._settle = redis.register_script(_SETTLE)
        self._available = redis.register_script(_AVAILABLE)
        self._mark_stale = redis.register_script(_MARK_STALE)
        self._settle_spooled = redis.register_script(_SETTLE_SPOOLED)
        self._settle_replayed = redis.register_script(_SETTLE_REPLAYED)
        self._retry = HotMoveRetryQueue(self.mark_stale, self.forget, max_moves=retry_queue_moves)
        self._open: dict[str, tuple[Reservation, float]] = {}  # request_id → (reservation, monotonic made)
        # (request id, part) of limit holds after_commit settled already: settle_limits skips those parts.
        self._limits_settled: set[tuple[str, str]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self.clock = utcnow  # injectable: tests roll periods over

    # -- leases --------------------------------------------------------------------------------

    def _expiry_ms(self, now_ms: int) -> int:
        """When a reservation made (or renewed) now stops counting: one lease on, never past the TTL."""
        return now_ms + min(self._lease_ms, self._ttl_ms)

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            with contextlib.suppress(RuntimeError):
                self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(max(self._lease_ms / 3000, 0.5))
            try:
                await self.renew_lease()
            except Exception:  # Redis is down: the next round retries; expiry is the fallback
                continue

    async def renew_lease(self) -> int:
        """Push this instance's open reservations (younger than the TTL) and their budget holds a lease on."""
        cutoff = time.monotonic() - self._ttl_ms / 1000
        for rid in [rid for rid, (_r, made) in self._open.items() if made <= cutoff]:
            del self._open[rid]  # past the TTL: left to expire
        live = [r for r, _made in self._open.values()]
        if not live:
            return 0
        until = self._expiry_ms(_now_ms())
        pipe = self._redis.pipeline(transaction=False)
        for r in live:
            pipe.zadd(_keys(r.user_id)[2], {r.request_id: until}, xx=True)
            if r.limits is not None:
                for scope in r.limits.scopes:
                    if scope.budget_nano is not None:
                        tag = period_tag(scope.budget_period, r.limits.window_start)
                        x = _limit_keys(scope.scope, r.user_id, r.limits.window_start, tag)[4]
                        pipe.zadd(x, {r.request_id: until}, xx=True)
        await pipe.execute()
        return len(live)

    async def load_snapshot(self, user_id: uuid.UUID) -> None:
        """Load the user's balance from credit_accounts into Redis, unless it is there already.

        Spooled debits not yet in the ledger are added; those whose record is in usage_logs at the same
        database snapshot as the balance are dropped from the spool hash (the balance holds them)."""
        acct, _res, _exp, pend = _keys(user_id)
        spool = _spool_key(user_id)
        for attempt in range(3):
            spooled = [k.decode() if isinstance(k, bytes) else str(k) for k in await self._redis.hkeys(spool)]
            async with self._engine.connect() as conn:
                if spooled and conn.dialect.name == "postgresql":  # both reads from one snapshot
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                balance, version = await account_state(conn, user_id)
                landed = await _landed_request_ids(conn, spooled)
            # Refused (-1) when a stale mark names a later posting than this read saw: read again. Only a
            # database restored to an older state keeps refusing; the database is the truth, so it wins.
            force = "1" if attempt == 2 else ""
            loaded = await self._load(keys=[acct, pend, spool], args=[balance, version, force, *landed])
            if int(loaded) != -1:
                return

    async def reserve(
        self, user_id: uuid.UUID, request_id: str, amount_nano: int, limits: LimitRequest | None = None
    ) -> Reservation:
        if limits is not None and limits.active:
            reservation = await self._reserve_with_limits(user_id, request_id, amount_nano, limits)
        else:
            reservation = await self._reserve_credit(user_id, request_id, amount_nano)
        self._open[request_id] = (reservation, time.monotonic())
        self._start_renewing()
        return reservation

    async def _reserve_credit(self, user_id: uuid.UUID, request_id: str, amount_nano: int) -> Reservation:
        acct, res, exp, _pend = _keys(user_id)
        for _ in range(3):  # a reload (not loaded, or a dead instance's reservation expired), then once more
            now = _now_ms()
            outcome: Any = await self._reserve(
                keys=[acct, res, exp], args=[now, request_id, amount_nano, self._expiry_ms(now)]
            )
            status, available = int(outcome[0]), int(outcome[1])
            if status == 1:
                return Reservation(user_id, request_id, amount_nano)
            if status == 0:
                raise InsufficientCredit(available, amount_nano)
            await self.load_snapshot(user_id)
        raise RuntimeError("credit snapshot did not load")  # pragma: no cover - load is unconditional

    async def _reserve_with_limits(
        self, user_id: uuid.UUID, request_id: str, amount_nano: int, limits: LimitRequest
    ) -> Reservation:
        """Credit and every limit of the request's scopes in one script (loading what is not loaded).

        On a cluster, a workspace's limits live on the workspace's slot: they are held first by a script of
        their own, then the user's script holds the credit and the key's and user's limits; if that one
        refuses (or fails), the workspace hold is released. So nothing is ever admitted past a limit; the
        transient effect is conservative only: between the two scripts (one round trip; or a lease, if the
        process dies there) the workspace counts a request that may yet be refused.
        """
        scopes = limits.active
        apart = self._cluster and any(_shared(s.scope) for s in scopes)
        own = tuple(s for s in scopes if not _shared(s.scope)) if apart else scopes
        shared = tuple(s for s in scopes if _shared(s.scope)) if apart else ()
        first = scopes[0]
        for _ in range(3 + len(scopes)):  # loads (credit, each budget) and a reload after expiries
            now = self.clock()
            window = window_start(now)
            now_ms = _now_ms()
            head: list[int | str] = [now_ms, request_id, amount_nano, self._expiry_ms(now_ms), limits.tokens]
            if shared:
                keys, args = _limits_hold_call(user_id, shared, now, head)
                held: Any = await self._hold_limits(keys=keys, args=args)
                if int(held[0]) == -2:
                    await self._load_budget(shared[int(held[1]) - 1], user_id, now)
                    continue
                if int(held[0]) != 1:
                    raise _limit_refusal(held, shared, first, now)
            keys, args = _limits_hold_call(user_id, own, now, head)
            try:
                outcome: Any = await self._reserve_limited(keys=list(_keys(user_id)[:3]) + keys, args=args)
            except BaseException:
                if shared:
                    await self._undo_hold(request_id, shared, user_id, now, limits.tokens)
                raise
            code = int(outcome[0])
            if code != 1 and shared:
                await self._undo_hold(request_id, shared, user_id, now, limits.tokens)
            if code == 1:
                status = None
                if first.scope.startswith("k:") and (first.rpm is not None or first.tpm is not None):
                    status = RateStatus(
                        first.rpm,
                        max((first.rpm or 0) - int(outcome[2]), 0),
                        first.tpm,
                        max((first.tpm or 0) - int(outcome[3]), 0),
                        window_reset_seconds(now),
                    )
                hold = LimitHold(scopes, window, limits.tokens, amount_nano, status)
                return Reservation(user_id, request_id, amount_nano, hold)
            if code == 0:
                raise InsufficientCredit(int(outcome[1]), amount_nano)
            if code == -1:
                await self.load_snapshot(user_id)
                continue
            if code == -2:
                await self._load_budget(own[int(outcome[1]) - 1], user_id, now)
                continue
            raise _limit_refusal(outcome, own, first, now)
        raise RuntimeError("limit state did not load")  # pragma: no cover

    async def _undo_hold(
        self, request_id: str, scopes: Sequence[ScopeLimits], owner: uuid.UUID, now: datetime, tokens: int
    ) -> None:
        """Release the limits _HOLD_LIMITS held for a request the user's script then refused. Best effort: if
        Redis does not answer, the budget holds expire with their lease and the counters with their window."""
        keys: list[str] = []
        args: list[str | int] = [request_id, tokens, len(scopes)]
        for scope in scopes:
            keys += _limit_keys(scope.scope, owner, window_start(now), period_tag(scope.budget_period, now))
            args += [int(scope.rpm is not None or scope.tpm is not None), int(scope.budget_nano is not None)]
        with contextlib.suppress(*_UNREACHABLE):
            await self._release_limits(keys=keys, args=args)

    async def _load_budget(self, scope: ScopeLimits, owner: uuid.UUID, now: datetime) -> None:
        """Load a budget's spend this period from usage_logs (the truth) into Redis, unless it is there."""
        start, _reset = period_bounds(scope.budget_period, now)
        kind, _, ident = scope.scope.partition(":")
        async with self._engine.connect() as conn:
            spent = (
                await conn.execute(
                    select(func.coalesce(func.sum(usage.c.charged_nano), 0)).where(
                        _USAGE_COLUMN[kind] == uuid.UUID(ident), usage.c.created_at >= start
                    )
                )
            ).scalar_one()
        budget = _limit_keys(scope.scope, owner, now, period_tag(scope.budget_period, now))[2]
        await self._redis.hsetnx(budget, "spent", int(spent))
        ttl = _budget_ttl((scope,), now)
        if ttl:
            await self._redis.expire(budget, ttl)

    async def window_usage(
        self, scope: str, now: datetime, conn: Any = None, owner: uuid.UUID | None = None
    ) -> tuple[int, int]:
        if owner is None and scope.startswith("u:"):
            owner = uuid.UUID(scope[2:])
        if owner is None and not _shared(scope):
            raise ValueError(f"the counters of {scope} live under its user's hash tag: pass owner")
        r, t, _b, _h, _x = _limit_keys(scope, owner or uuid.UUID(int=0), window_start(now), 0)
        requests, tokens = await self._redis.mget([r, t])
        return int(requests or 0), int(tokens or 0)

    def _note_limits_settled(self, part: tuple[str, str]) -> None:
        if len(self._limits_settled) >= 100_000:  # callers that never came back for theirs: forget them
            self._limits_settled.clear()
        self._limits_settled.add(part)

    def _settlement_parts(self, hold: LimitHold) -> tuple[str, ...]:
        """The parts a reservation's limit holds settle in: "all" (one script) on a single Redis, or where
        every scope is on the user's slot; on a cluster with a workspace scope, the user's slot's ("own", if
        it has any scope there) and the workspace's ("shared")."""
        if not (self._cluster and any(_shared(s.scope) for s in hold.scopes)):
            return ("all",)
        if all(_shared(s.scope) for s in hold.scopes):
            return ("shared",)
        return ("own", "shared")

    def _limit_settlements(
        self,
        reservation: Reservation,
        actual_nano: int,
        actual_tokens: int,
        parts: Sequence[str] | None = None,
    ) -> list[_Part]:
        """The _SETTLE_LIMITS calls of a reservation's limit holds, one per part (`parts`: only these)."""
        hold = reservation.limits
        if hold is None:
            return []
        found: list[_Part] = []
        for name in self._settlement_parts(hold) if parts is None else parts:
            shared = None if name == "all" else name == "shared"
            call = _limits_settle_call(reservation, actual_nano, actual_tokens, shared)
            assert call is not None
            found.append((name, *call))
        return found

    async def settle_limits(self, reservation: Reservation, actual_nano: int, actual_tokens: int) -> None:
        self._open.pop(reservation.request_id, None)
        if reservation.limits is None:
            return
        todo: list[str] = []
        for name in self._settlement_parts(reservation.limits):
            part = (reservation.request_id, name)
            if part in self._limits_settled:  # done with the commit's hot move (after_commit)
                self._limits_settled.discard(part)
            else:
                todo.append(name)
        if todo:
            settlements = self._limit_settlements(reservation, actual_nano, actual_tokens, todo)
            await self._run_scripts(
                [(self._settle_limits, keys, args, None) for _name, keys, args in settlements]
            )

    async def release(self, reservation: Reservation) -> None:
        await self._settle(keys=list(_keys(reservation.user_id)), args=[reservation.request_id, 0, ""])
        await self.settle_limits(reservation, 0, 0)

    async def settle_in_transaction(self, conn: Any, reservations: Sequence[Reservation]) -> None:
        return None  # Redis is moved after the commit, in after_commit

    async def after_commit(self, moves: Sequence[HotMove]) -> None:
        """Apply committed postings, close reservations and settle their limit holds in Redis, in one round
        trip (one script, or a pipeline of them for a batch); never raises for an outage.

        The postings are committed already, so a Redis failure here must not fail the caller: the users'
        snapshots are marked stale (reloaded from the ledger on next use) and the reservations closed — now
        if Redis answers, else from the bounded retry queue once it does.
        """
        for m in moves:
            if m.reservation is not None:
                self._open.pop(m.reservation.request_id, None)
        try:
            await self._apply_moves(moves)
        except _UNREACHABLE as exc:
            await self._heal(moves, exc)

    async def _heal(self, moves: Sequence[HotMove], error: BaseException) -> None:
        """Mark the moves' snapshots stale now if Redis answers, else queue that until it does."""
        try:
            await self.mark_stale(moves)
        except _UNREACHABLE:
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
        calls: list[_Call] = []
        for m in moves:
            if m.reservation is None and m.version is None:
                continue
            keys: list[str] = list(_keys(m.user_id))
            args: list[str | int] = [
                m.reservation.request_id if m.reservation else "",
                m.delta_nano,
                "" if m.version is None else m.version,
            ]
            parts = (
                self._limit_settlements(m.reservation, *m.limits_actual)
                if m.reservation is not None and m.limits_actual is not None
                else []
            )
            if parts and parts[0][0] != "shared":
                # The limit holds on the user's slot settle in the same script as the credit: no round trip
                # of their own (a workspace's on a cluster: a script on its slot, in the same pipeline).
                name, limit_keys, limit_args = parts.pop(0)
                assert m.reservation is not None
                part = (m.reservation.request_id, name)
                calls.append((self._settle_with_limits, keys + limit_keys, args + limit_args, part))
            else:
                calls.append((self._settle, keys, args, None))
            for name, limit_keys, limit_args in parts:
                assert m.reservation is not None
                calls.append((self._settle_limits, limit_keys, limit_args, (m.reservation.request_id, name)))
        await self._run_scripts(calls)

    async def _run_scripts(self, calls: Sequence[_Call]) -> None:
        """Run the scripts: one by EVALSHA, several in one pipelined round trip (on a cluster, concurrently:
        one round trip's time). A call whose `settled` part is given is noted once it ran (settle_limits
        then skips it)."""
        if len(calls) == 1:
            script, keys, args, settled = calls[0]
            await script(keys=keys, args=args)
            if settled is not None:
                self._note_limits_settled(settled)
            return
        if not calls:
            return
        results: list[Any]
        if self._cluster:  # a cluster pipeline refuses scripts: run them at once, each on its slot's node
            results = await asyncio.gather(
                *(script(keys=keys, args=args) for script, keys, args, _settled in calls),
                return_exceptions=True,
            )
        else:  # one pipelined round trip of EVALSHA (the scripts are loaded on first use)
            pipe = self._redis.pipeline(transaction=False)
            for script, keys, args, _settled in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        failed: BaseException | None = None
        for (script, keys, args, settled), result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):  # not loaded yet, or Redis lost it: this one did not run
                await script(keys=keys, args=args)
            elif isinstance(result, Exception):
                failed = failed or result  # the others ran: note them, so nothing settles twice
                continue
            if settled is not None:
                self._note_limits_settled(settled)
        if failed is not None:
            raise failed

    # -- the local spool (PostgreSQL unreachable; storage/usage/spool.py) ------------------------------

    async def settle_spooled(
        self, user_id: uuid.UUID, reservation: Reservation | None, request_id: str, delta_nano: int
    ) -> None:
        """A record went to the spool: close its reservation and apply its debit now (kept in the spool hash
        until its replay commits). Raises if Redis does not answer (the caller then refuses the request)."""
        self._open.pop(request_id, None)
        keys = [*_keys(user_id)[:3], _spool_key(user_id)]
        await self._settle_spooled(keys=keys, args=[request_id, delta_nano])

    async def after_replay(self, moves: Sequence[HotMove], spooled: dict[uuid.UUID, list[str]]) -> None:
        """After a replayed batch committed: each user's posting replaces its spooled debits in the hot copy.

        Never raises for an outage: the snapshots are then marked stale, and the reload drops the spool
        entries whose records are in usage_logs (so the debit still counts once)."""
        try:
            for m in moves:
                if m.version is None:
                    continue
                acct, _res, _exp, pend = _keys(m.user_id)
                await self._settle_replayed(
                    keys=[acct, pend, _spool_key(m.user_id)],
                    args=[m.delta_nano, m.version, *spooled.get(m.user_id, [])],
                )
        except _UNREACHABLE as exc:
            await self._heal(moves, exc)

    async def forget_spooled(
        self,
        user_id: uuid.UUID,
        request_ids: Sequence[str],
        version: int,
        reservation: Reservation | None = None,
    ) -> None:
        """Records already in the ledger (committed although the commit looked failed): drop their spool
        entries and mark the snapshot stale at `version` (reloaded from the ledger, which holds them);
        close `reservation` if one is given."""
        if reservation is not None:
            self._open.pop(reservation.request_id, None)
        if request_ids:
            await self._redis.hdel(_spool_key(user_id), *request_ids)
        await self._heal([HotMove(user_id, reservation, 0, version)], RuntimeError("commit outcome unknown"))

    async def serving_balance(self, user_id: uuid.UUID) -> int:
        """The balance Redis serves from: the ledger's, minus the spooled debits not yet replayed."""
        value = await self._redis.hget(_keys(user_id)[0], "bal")
        return 0 if value is None else int(value)

    async def spooled_nano(self, user_id: uuid.UUID) -> int:
        """Σ of the user's spooled debits not yet replayed (≤ 0)."""
        return sum(int(v) for v in await self._redis.hvals(_spool_key(user_id)))

    @property
    def pending_moves(self) -> int:
        """Hot-copy moves waiting for Redis to answer again (0 when the copy is up to date)."""
        return len(self._retry)

    async def available(self, user_id: uuid.UUID) -> int:
        acct, res, exp, _pend = _keys(user_id)
        for _ in range(3):
            loaded, bal, held = (
                int(x) for x in await self._available(keys=[acct, res, exp], args=[_now_ms()])
            )
            if loaded:
                return bal - held
            await self.load_snapshot(user_id)
        raise RuntimeError("credit snapshot did not load")  # pragma: no cover

    async def hot_balance(self, user_id: uuid.UUID) -> int | None:
        """The settled balance Redis holds, or None when it has no snapshot (for reconcile): without the
        spooled debits not yet replayed (those are reported as the spool's, not as a mismatch)."""
        value = await self._redis.hget(_keys(user_id)[0], "bal")
        return None if value is None else int(value) - await self.spooled_nano(user_id)

    async def forget(self, user_id: uuid.UUID) -> None:
        """Drop the hot copy of a user's balance; the next use reloads it from the database."""
        acct, _res, _exp, pend = _keys(user_id)
        await self._redis.hdel(acct, "bal", "ver")
        await self._redis.delete(pend)

    async def rebuild_hot_copy(self, user_id: uuid.UUID) -> None:
        """Reload a user's hot copy from the database (the truth)."""
        await self.forget(user_id)
        await self.load_snapshot(user_id)

    async def _reservation_sets(self) -> list[tuple[uuid.UUID, str]]:
        found: list[tuple[uuid.UUID, str]] = []
        async for raw in self._redis.scan_iter(match="sg:{*}:exp", count=500):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                found.append((uuid.UUID(key[len("sg:{") : key.index("}")]), key))
            except ValueError:
                continue
        return found

    async def reservation_counts(self) -> tuple[int, int]:
        """(open, orphaned) reservations of every user; orphaned: past their lease, not yet collected."""
        open_count = orphaned = 0
        now = _now_ms()
        for _user, key in await self._reservation_sets():
            open_count += int(await self._redis.zcard(key))
            orphaned += int(await self._redis.zcount(key, "-inf", now))
        return open_count, orphaned

    async def release_orphans(self) -> int:
        """Release every reservation past its lease (a dead instance's): the purge each script run does."""
        released = 0
        now = _now_ms()
        for user_id, key in await self._reservation_sets():
            expired = int(await self._redis.zcount(key, "-inf", now))
            if expired:
                await self.available(user_id)
                released += expired
        return released

    async def close(self) -> None:
        """Try the queued hot-copy moves once more, then stop retrying (the Redis client is the app's)."""
        await self._retry.close()
        if self._renewer is not None:  # the Redis client belongs to the app lifespan
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer


async def _landed_request_ids(conn: Any, request_ids: Sequence[str]) -> list[str]:
    """Those of `request_ids` whose record is in usage_logs (on `conn`'s snapshot)."""
    if not request_ids:
        return []
    rows = await conn.execute(select(usage.c.request_id).where(usage.c.request_id.in_(list(request_ids))))
    return [row[0] for row in rows]


def _limits_hold_call(
    owner: uuid.UUID, scopes: Sequence[ScopeLimits], now: datetime, head: list[int | str]
) -> tuple[list[str], list[int | str]]:
    """The scope keys and the ARGV of _RESERVE_LIMITED / _HOLD_LIMITS for these scopes (`head`: now_ms,
    request_id, amount, expires_ms, tokens)."""
    keys: list[str] = []
    args: list[int | str] = [*head, len(scopes), 120, _budget_ttl(scopes, now)]
    window = window_start(now)
    for scope in scopes:
        keys += _limit_keys(scope.scope, owner, window, period_tag(scope.budget_period, now))
        args += [_limit(scope.rpm), _limit(scope.tpm), _limit(scope.budget_nano)]
    return keys, args


def _limit_refusal(
    outcome: Any, scopes: Sequence[ScopeLimits], first: ScopeLimits, now: datetime
) -> LimitExceeded:
    """The LimitExceeded of a script's refusal {-3|-4|-5, i, used} of scope i of `scopes` (`first`: the
    request's first scope, whose window the refusal's headers report)."""
    code, scope, used = int(outcome[0]), scopes[int(outcome[1]) - 1], int(outcome[2])
    reset = window_reset_seconds(now)
    status = _refused_status(first, used if scope is first else 0, reset)
    if code == -3:
        return LimitExceeded("requests", scope.scope, scope.rpm or 0, max(1, int(reset + 0.999)), status)
    if code == -4:
        return LimitExceeded("tokens", scope.scope, scope.tpm or 0, max(1, int(reset + 0.999)), status)
    _start, period_reset = period_bounds(scope.budget_period, now)
    return LimitExceeded(
        "budget", scope.scope, scope.budget_nano or 0, retry_after_seconds(period_reset, now), status
    )


def _limits_settle_call(
    reservation: Reservation, actual_nano: int, actual_tokens: int, shared: bool | None = None
) -> tuple[list[str], list[str | int]] | None:
    """The keys and args of _SETTLE_LIMITS for a reservation's limit holds (None: it holds none); `shared`:
    only the workspace scopes (True) or only the user's slot's (False; with no scope it settles nothing)."""
    hold = reservation.limits
    if hold is None:
        return None
    scopes = [s for s in hold.scopes if shared is None or _shared(s.scope) == shared]
    keys: list[str] = []
    args: list[str | int] = [
        reservation.request_id,
        actual_tokens - hold.tokens,
        actual_nano,
        len(scopes),
    ]
    for scope in scopes:
        _r, t, b, h, x = _limit_keys(
            scope.scope,
            reservation.user_id,
            hold.window_start,
            period_tag(scope.budget_period, hold.window_start),
        )
        keys += [t, b, h, x]
        counts = scope.rpm is not None or scope.tpm is not None
        args += [int(counts), int(scope.budget_nano is not None)]
    return keys, args


def _budget_ttl(scopes: Sequence[ScopeLimits], now: datetime) -> int:
    """How long the budget keys of these scopes must live: their longest period plus a day (0: forever)."""
    longest = 0
    for scope in scopes:
        if scope.budget_nano is None:
            continue
        _start, reset = period_bounds(scope.budget_period, now)
        if reset is None:
            return 0
        longest = max(longest, int((reset - now).total_seconds()) + 86400)
    return longest


def _refused_status(first: ScopeLimits, used_requests: int, reset: float) -> RateStatus | None:
    """The key's window as a refused request sees it (None when the key has no rate limit)."""
    if not first.scope.startswith("k:") or (first.rpm is None and first.tpm is None):
        return None
    return RateStatus(first.rpm, max((first.rpm or 0) - used_requests, 0), first.tpm, 0, reset)
