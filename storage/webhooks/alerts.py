"""The rules that raise alert events: a user's low-balance threshold, `credits.low`, and `key.expired`.

Each event is written to the webhook outbox (`service.enqueue`) in the transaction of what caused it:
- `credits.low`: in the recording transaction, when a debit takes a balance from ≥ the user's threshold
  to < it (`low_balance_alerts`); a balance that stays under it raises nothing more until it is topped up
  above the threshold and crosses again.
- `key.expired`: a periodic job (`emit_key_expirations`) finds keys whose `expires_at` has passed; a row in
  `key_expiry_alerts` claims each key once, so two workers or two passes never announce it twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pricing.money import MoneyError, parse_usd
from storage.dialect import insert_for
from storage.errors import InvalidAmount, UserNotFound
from storage.models import ApiKey, KeyExpiryAlert, User, table_of
from storage.types import utcnow
from storage.webhooks.payloads import CreditsLow, KeyExpired
from storage.webhooks.service import enqueue

users = table_of(User)
api_keys = table_of(ApiKey)
expiry_alerts = table_of(KeyExpiryAlert)


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """A user's alert thresholds (None: no `credits.low` alert)."""

    user_id: uuid.UUID
    low_balance_threshold_nano: int | None


def parse_threshold(low_balance_usd: str | None) -> int | None:
    """A threshold given as decimal USD text as integer nano-USD; None turns the alert off."""
    if low_balance_usd is None:
        return None
    try:
        nano = parse_usd(low_balance_usd)
    except MoneyError as exc:
        raise InvalidAmount(str(exc), param="low_balance_usd") from None
    if nano < 0:
        raise InvalidAmount("the threshold cannot be negative", param="low_balance_usd")
    return nano


async def set_low_balance_threshold(
    conn: AsyncConnection, user_id: uuid.UUID, threshold_nano: int | None
) -> AlertSettings:
    """Set (or clear, with None) the balance under which the user's `credits.low` alert is raised."""
    if threshold_nano is not None and threshold_nano < 0:
        raise InvalidAmount("the threshold cannot be negative", param="low_balance_usd")
    changed = await conn.execute(
        update(users).where(users.c.id == user_id).values(low_balance_threshold_nano=threshold_nano)
    )
    if changed.rowcount == 0:
        raise UserNotFound(user_id, param="user_id")
    return AlertSettings(user_id, threshold_nano)


async def get_alert_settings(conn: AsyncConnection, user_id: uuid.UUID) -> AlertSettings:
    row = (
        await conn.execute(select(users.c.low_balance_threshold_nano).where(users.c.id == user_id))
    ).one_or_none()
    if row is None:
        raise UserNotFound(user_id, param="user_id")
    return AlertSettings(user_id, row.low_balance_threshold_nano)


def crossed_under(before_nano: int, after_nano: int, threshold_nano: int) -> bool:
    """True when a move takes a balance from at or above the threshold to under it."""
    return before_nano >= threshold_nano > after_nano


async def low_balance_alerts(
    conn: AsyncConnection,
    deltas: Mapping[uuid.UUID, int],
    balances: Mapping[uuid.UUID, tuple[int, int]],
) -> int:
    """In the recording transaction: queue `credits.low` for each debited user whose balance crossed under
    their threshold. `deltas` are the (signed) moves just posted, `balances` the (balance, version) after.
    Returns how many deliveries were queued. One small indexed read, only for users who were debited."""
    debited = [user_id for user_id, delta in deltas.items() if delta < 0 and user_id in balances]
    if not debited:
        return 0
    rows = (
        await conn.execute(
            select(users.c.id, users.c.low_balance_threshold_nano).where(
                users.c.id.in_(debited), users.c.low_balance_threshold_nano.is_not(None)
            )
        )
    ).all()
    queued = 0
    for row in rows:
        after = balances[row.id][0]
        threshold = int(row.low_balance_threshold_nano)
        if crossed_under(after - deltas[row.id], after, threshold):
            payload = CreditsLow(user_id=row.id, balance_nano=after, threshold_nano=threshold)
            queued += await enqueue(conn, "credits.low", payload, user_id=row.id)
    return queued


async def emit_key_expirations(engine: AsyncEngine, now: datetime | None = None) -> int:
    """Queue `key.expired` once for every key whose `expires_at` has passed; returns how many keys."""
    now = now or utcnow()
    k = api_keys.c
    async with engine.begin() as conn:
        due = (
            await conn.execute(
                select(k.id, k.key_prefix, k.user_id, k.workspace_id, k.expires_at)
                .where(
                    api_keys.c.expires_at.is_not(None),
                    api_keys.c.expires_at <= now,
                    ~select(expiry_alerts.c.key_id).where(expiry_alerts.c.key_id == api_keys.c.id).exists(),
                )
                .order_by(api_keys.c.expires_at)
                .limit(500)
            )
        ).all()
        announced = 0
        for key in due:
            claimed = await conn.execute(
                insert_for(conn, expiry_alerts)
                .values(key_id=key.id, expired_at=key.expires_at, notified_at=now)
                .on_conflict_do_nothing(index_elements=["key_id"])
                .returning(expiry_alerts.c.key_id)
            )
            if claimed.scalar_one_or_none() is None:  # another worker announced it meanwhile
                continue
            payload = KeyExpired(
                key_id=key.id, key_prefix=key.key_prefix, user_id=key.user_id, expired_at=key.expires_at
            )
            await enqueue(
                conn, "key.expired", payload, user_id=key.user_id, workspace_id=key.workspace_id, now=now
            )
            announced += 1
    return announced
