"""Event types, the shapes of their payloads, the envelope every delivery carries, and Slack's text.

The body follows the Standard Webhooks recommendation: `{"type", "timestamp", "data"}`. Money travels as
integer nano-USD plus an exact decimal USD string, never as a float.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

EVENT_TYPES = ("budget.threshold", "credits.low", "key.expired", "invoice.created", "spend.anomaly")
EventType = Literal["budget.threshold", "credits.low", "key.expired", "invoice.created", "spend.anomaly"]

NANO_PER_USD = 1_000_000_000


def usd(nano: int) -> str:
    """Exact decimal USD text of an integer nano-USD amount (no float on the way)."""
    return format(Decimal(nano).scaleb(-9).normalize(), "f")


class BudgetThreshold(msgspec.Struct, kw_only=True):
    """A budget reached 50, 80 or 100 % of its limit (sent once per level and period).

    `budget_nano`/`spent_nano` also travel as exact `budget_usd`/`spent_usd` strings (`to_data`);
    `resets_at` is None for a `total` budget, which never resets.
    """

    scope: Literal["key", "user", "workspace"]
    id: uuid.UUID
    threshold_pct: int
    budget_nano: int
    spent_nano: int
    period: str
    period_start: datetime
    resets_at: datetime | None
    user_id: uuid.UUID | None = None
    workspace_id: uuid.UUID | None = None


class CreditsLow(msgspec.Struct, kw_only=True):
    """A user's balance went under their threshold."""

    user_id: uuid.UUID
    balance_nano: int
    threshold_nano: int


class KeyExpired(msgspec.Struct, kw_only=True):
    key_id: uuid.UUID
    key_prefix: str
    user_id: uuid.UUID
    expired_at: datetime


class InvoiceCreated(msgspec.Struct, kw_only=True):
    invoice_id: uuid.UUID
    user_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    total_nano: int


class SpendAnomaly(msgspec.Struct, kw_only=True):
    """Spend over a window far above its usual level (the insights job decides what "far" is)."""

    user_id: uuid.UUID
    window_start: datetime
    window_end: datetime
    spent_nano: int
    expected_nano: int
    workspace_id: uuid.UUID | None = None


EventData = BudgetThreshold | CreditsLow | KeyExpired | InvoiceCreated | SpendAnomaly


class Envelope(msgspec.Struct):
    """What every JSON delivery's body is."""

    type: str
    timestamp: datetime
    data: dict[str, Any]


def to_data(payload: EventData | dict[str, Any]) -> dict[str, Any]:
    """A payload as plain JSON data; each `*_nano` amount gets an exact `*_usd` string beside it."""
    data: dict[str, Any] = (
        msgspec.to_builtins(payload) if isinstance(payload, msgspec.Struct) else dict(payload)
    )
    for key, value in list(data.items()):
        if key.endswith("_nano") and isinstance(value, int):
            data[key.removesuffix("_nano") + "_usd"] = usd(value)
    return data


def is_slack_url(url: str) -> bool:
    """Slack incoming webhooks live on hooks.slack.com and want `{"text": …}`, not our envelope."""
    return (urlsplit(url).hostname or "").lower() == "hooks.slack.com"


def slack_text(event_type: str, data: dict[str, Any]) -> str:
    """A one-line human rendering of an event for Slack."""
    who = data.get("user_id") or data.get("workspace_id") or data.get("id") or "-"
    if event_type == "budget.threshold":
        return (
            f":warning: SynapGate: {data['scope']} {data['id']} reached {data['threshold_pct']}% of its "
            f"{data['period']} budget (${data['spent_usd']} of ${data['budget_usd']})"
        )
    if event_type == "credits.low":
        return (
            f":warning: SynapGate: user {who} balance is ${data['balance_usd']} "
            f"(under ${data['threshold_usd']})"
        )
    if event_type == "key.expired":
        return f":key: SynapGate: key {data['key_prefix']}… of user {who} expired at {data['expired_at']}"
    if event_type == "invoice.created":
        return f":receipt: SynapGate: invoice {data['invoice_id']} for user {who}: ${data['total_usd']}"
    if event_type == "spend.anomaly":
        return (
            f":rotating_light: SynapGate: unusual spend by user {who}: ${data['spent_usd']} "
            f"(usually ${data['expected_usd']}) from {data['window_start']} to {data['window_end']}"
        )
    return f"SynapGate: {event_type} {msgspec.json.encode(data).decode()}"


def render_body(fmt: str, event_type: str, timestamp: datetime, data: dict[str, Any]) -> str:
    """The exact body an endpoint receives: our envelope, or Slack's `{"text": …}`."""
    if fmt == "slack":
        return msgspec.json.encode({"text": slack_text(event_type, data)}).decode()
    return msgspec.json.encode(Envelope(event_type, timestamp, data)).decode()
