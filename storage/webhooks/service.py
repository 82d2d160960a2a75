"""The rules of webhook alerts: endpoints (secret shown once, scoped reads), the outbox, and delivery.

`enqueue` writes one outbox row per matching endpoint in the caller's transaction, so an alert exists if
and only if the record that caused it committed. `deliver_due` (run by the job worker) claims due rows,
signs them the Standard Webhooks way, POSTs them, and records each attempt and the next one's time
(storage.webhooks.backoff). A receiver that is down loses nothing: its rows wait in the outbox.
Delivery is at least once; the `webhook-id` header stays the same across retries so receivers can dedupe.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement
from standardwebhooks import Webhook

from storage.errors import InvalidInput, NotFound
from storage.models import WebhookDelivery, WebhookEndpoint, table_of
from storage.types import utcnow
from storage.webhooks.backoff import next_attempt_at
from storage.webhooks.payloads import EVENT_TYPES, EventData, is_slack_url, render_body, to_data

log = logging.getLogger("synapgate.webhooks")

endpoints = table_of(WebhookEndpoint)
deliveries = table_of(WebhookDelivery)

SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2000
USER_AGENT = "SynapGate-Webhooks/1"
#: A claimed row is invisible to other workers for this long past its HTTP timeout (a crashed worker's
#: claims come back by themselves).
CLAIM_LEASE = timedelta(seconds=60)


class WebhookInputError(InvalidInput, ValueError):
    """A request to create an endpoint is wrong; `param` names the field (a 400 in the admin API)."""

    code = "invalid_webhook"

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, param=param)


class EndpointNotFound(NotFound, LookupError):
    """No such endpoint, or not one the caller may see (the two are not told apart): a 404.

    `what` is the object the caller named: `webhook`, or the `user`/`workspace` an endpoint was aimed at.
    """

    def __init__(self, what: str = "webhook") -> None:
        super().__init__(f"no such {what}", param=None if what == "webhook" else f"{what}_id")
        self.code = f"{what}_not_found"


@dataclass(frozen=True, slots=True)
class WebhookScope:
    """Who asks: the operator (`user_id` None) sees every endpoint; a user sees their own endpoints and
    those of the workspaces in `workspace_ids` (the ones they administer; the caller decides)."""

    user_id: uuid.UUID | None
    workspace_ids: frozenset[uuid.UUID] = frozenset()

    @property
    def is_admin(self) -> bool:
        return self.user_id is None


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    id: uuid.UUID
    url: str
    format: str
    events: list[str]
    user_id: uuid.UUID | None
    workspace_id: uuid.UUID | None
    description: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    """A new endpoint and its signing secret: the only time the secret is ever returned."""

    endpoint: EndpointInfo
    secret: str


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    id: uuid.UUID
    webhook_id: str
    endpoint_id: uuid.UUID
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(slots=True)
class DeliveryReport:
    """What one `deliver_due` pass did."""

    delivered: int = 0
    retrying: int = 0
    gave_up: int = 0
    ids: list[uuid.UUID] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.gave_up


def webhook_id(delivery_id: uuid.UUID) -> str:
    """The `webhook-id` header of a delivery: stable across its retries."""
    return f"msg_{delivery_id.hex}"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _endpoint(row: Any) -> EndpointInfo:
    return EndpointInfo(
        id=row.id,
        url=row.url,
        format=row.format,
        events=list(row.events),
        user_id=row.user_id,
        workspace_id=row.workspace_id,
        description=row.description,
        created_at=row.created_at,
    )


def _readable(scope: WebhookScope) -> Any:
    """The one filter that scopes every read and delete of endpoints."""
    if scope.is_admin:
        return True
    mine = endpoints.c.user_id == scope.user_id
    if scope.workspace_ids:
        return or_(mine, endpoints.c.workspace_id.in_(scope.workspace_ids))
    return mine


def _validate(url: str, events: Sequence[str], fmt: str | None) -> tuple[str, list[str], str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL_LENGTH:
        raise WebhookInputError("url must be an http:// or https:// URL of at most 2000 characters", "url")
    wanted = list(dict.fromkeys(events))
    if not wanted:
        raise WebhookInputError("events must name at least one event type", "events")
    unknown = [e for e in wanted if e not in EVENT_TYPES]
    if unknown:
        raise WebhookInputError(
            f"unknown event type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})", "events"
        )
    if fmt is None:
        fmt = "slack" if is_slack_url(url) else "json"
    if fmt not in ("json", "slack"):
        raise WebhookInputError("format must be 'json' or 'slack'", "format")
    return url, wanted, fmt


async def create_endpoint(
    conn: AsyncConnection,
    scope: WebhookScope,
    *,
    url: str,
    events: Sequence[str],
    user_id: uuid.UUID | None = None,
    workspace_id: uuid.UUID | None = None,
    format: str | None = None,
    description: str | None = None,
) -> CreatedEndpoint:
    """Register an endpoint; its `whsec_…` secret is in the result and nowhere else afterwards.

    A user may create endpoints for themself or for a workspace in their scope; an endpoint with neither
    (every user's events) is the operator's only. `format` defaults to slack for hooks.slack.com URLs.
    """
    if not scope.is_admin:  # who first: another user's id is a 404 whatever else the request says
        if user_id is None and workspace_id is None:
            user_id = scope.user_id
        if user_id is not None and user_id != scope.user_id:
            raise EndpointNotFound("user")
        if workspace_id is not None and workspace_id not in scope.workspace_ids:
            raise EndpointNotFound("workspace")
    url, wanted, fmt = _validate(url, events, format)
    secret = new_secret()
    row = (
        await conn.execute(
            endpoints.insert()
            .values(
                id=uuid.uuid4(),
                url=url,
                format=fmt,
                events=wanted,
                user_id=user_id,
                workspace_id=workspace_id,
                secret=secret,
                description=description,
                created_at=utcnow(),
            )
            .returning(*_endpoint_columns())
        )
    ).one()
    return CreatedEndpoint(_endpoint(row), secret)


def _endpoint_columns() -> list[Any]:
    return [c for c in endpoints.c if c.name != "secret"]


async def list_endpoints(
    conn: AsyncConnection, scope: WebhookScope, *, limit: int = 50, offset: int = 0
) -> tuple[list[EndpointInfo], int]:
    """The endpoints the caller may see (never their secrets), oldest first, and how many there are."""
    query = select(*_endpoint_columns()).where(_readable(scope))
    total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await conn.execute(
        query.order_by(endpoints.c.created_at, endpoints.c.id).limit(limit).offset(offset)
    )
    return [_endpoint(r) for r in rows], int(total)


async def get_endpoint(conn: AsyncConnection, scope: WebhookScope, endpoint_id: uuid.UUID) -> EndpointInfo:
    row = (
        await conn.execute(
            select(*_endpoint_columns()).where(endpoints.c.id == endpoint_id, _readable(scope))
        )
    ).one_or_none()
    if row is None:
        raise EndpointNotFound("webhook")
    return _endpoint(row)


async def delete_endpoint(conn: AsyncConnection, scope: WebhookScope, endpoint_id: uuid.UUID) -> None:
    """Delete an endpoint and its outbox rows (nothing more is sent); EndpointNotFound if not visible."""
    deleted = await conn.execute(delete(endpoints).where(endpoints.c.id == endpoint_id, _readable(scope)))
    if deleted.rowcount == 0:
        raise EndpointNotFound("webhook")


def _delivery(row: Any) -> DeliveryInfo:
    return DeliveryInfo(
        id=row.id,
        webhook_id=webhook_id(row.id),
        endpoint_id=row.endpoint_id,
        event_type=row.event_type,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at,
        last_status=row.last_status,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
    )


async def list_deliveries(
    conn: AsyncConnection,
    scope: WebhookScope,
    endpoint_id: uuid.UUID,
    *,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[DeliveryInfo], int]:
    """An endpoint's deliveries, newest first, with their attempts; EndpointNotFound if not visible."""
    await get_endpoint(conn, scope, endpoint_id)
    cols = [c for c in deliveries.c if c.name != "body"]
    query: Select[Any] = select(*cols).where(deliveries.c.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(deliveries.c.status == status)
    total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await conn.execute(
        query.order_by(deliveries.c.created_at.desc(), deliveries.c.id).limit(limit).offset(offset)
    )
    return [_delivery(r) for r in rows], int(total)


async def enqueue(
    conn: AsyncConnection,
    event_type: str,
    payload: EventData | dict[str, Any],
    *,
    user_id: uuid.UUID | None = None,
    workspace_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> int:
    """Write an event to the outbox for every endpoint that wants it, IN THE CALLER'S TRANSACTION.

    Matching: the endpoint subscribes to `event_type`, and its scope (if any) is the event's user or
    workspace. Returns how many deliveries were queued (0 when nobody listens).
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    now = now or utcnow()
    user_match: ColumnElement[bool] = endpoints.c.user_id.is_(None)
    if user_id is not None:
        user_match = or_(user_match, endpoints.c.user_id == user_id)
    workspace_match: ColumnElement[bool] = endpoints.c.workspace_id.is_(None)
    if workspace_id is not None:
        workspace_match = or_(workspace_match, endpoints.c.workspace_id == workspace_id)
    rows = (
        await conn.execute(
            select(endpoints.c.id, endpoints.c.format, endpoints.c.events).where(
                and_(user_match, workspace_match)
            )
        )
    ).all()
    targets = [r for r in rows if event_type in r.events]
    if not targets:
        return 0
    data = to_data(payload)
    bodies = {fmt: render_body(fmt, event_type, now, data) for fmt in {r.format for r in targets}}
    await conn.execute(
        deliveries.insert(),
        [
            {
                "id": uuid.uuid4(),
                "endpoint_id": r.id,
                "event_type": event_type,
                "body": bodies[r.format],
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for r in targets
        ],
    )
    return len(targets)


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: uuid.UUID
    attempts: int
    body: str
    url: str
    secret: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _Outcome:
    claimed: _Claimed
    ok: bool
    status: int | None
    error: str | None


async def _claim(engine: AsyncEngine, now: datetime, limit: int, lease: timedelta) -> list[_Claimed]:
    """Take up to `limit` due rows, hidden from other workers for `lease` (SKIP LOCKED on PostgreSQL)."""
    async with engine.begin() as conn:
        due = (
            select(deliveries.c.id)
            .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now)
            .order_by(deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list((await conn.execute(due)).scalars())
        if not ids:
            return []
        await conn.execute(
            update(deliveries).where(deliveries.c.id.in_(ids)).values(next_attempt_at=now + lease)
        )
        rows = await conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.attempts,
                deliveries.c.body,
                deliveries.c.created_at,
                endpoints.c.url,
                endpoints.c.secret,
            )
            .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
            .where(deliveries.c.id.in_(ids))
        )
        return [_Claimed(r.id, r.attempts, r.body, r.url, r.secret, r.created_at) for r in rows]


def signed_headers(secret: str, delivery_id: uuid.UUID, timestamp: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt."""
    msg_id = webhook_id(delivery_id)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, timestamp, body),
    }


async def _send(http: aiohttp.ClientSession, item: _Claimed, now: datetime, http_timeout: float) -> _Outcome:
    headers = signed_headers(item.secret, item.id, now, item.body)
    try:
        async with http.post(
            item.url,
            data=item.body.encode(),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=http_timeout),
            allow_redirects=False,
        ) as response:
            if 200 <= response.status < 300:
                return _Outcome(item, True, response.status, None)
            text = (await response.content.read(300)).decode("utf-8", "replace")
            return _Outcome(item, False, response.status, f"HTTP {response.status}: {text}"[:500])
    except TimeoutError:
        return _Outcome(item, False, None, f"timed out after {http_timeout:g} s")
    except aiohttp.ClientError as exc:
        return _Outcome(item, False, None, f"{type(exc).__name__}: {exc}"[:500])


async def _record(
    engine: AsyncEngine,
    outcomes: Sequence[_Outcome],
    now: datetime,
    report: DeliveryReport,
    backoff_scale: float = 1.0,
) -> None:
    async with engine.begin() as conn:
        for outcome in outcomes:
            item = outcome.claimed
            attempts = item.attempts + 1
            values: dict[str, Any] = {
                "attempts": attempts,
                "last_attempt_at": now,
                "last_status": outcome.status,
                "last_error": outcome.error,
            }
            if outcome.ok:
                values.update(status="delivered", delivered_at=now, next_attempt_at=None)
                report.delivered += 1
            else:
                following = next_attempt_at(item.created_at, now, attempts, backoff_scale)
                if following is None:
                    values.update(status="failed", next_attempt_at=None)
                    report.gave_up += 1
                    log.warning(
                        "webhook delivery given up", extra={"delivery_id": str(item.id), "attempts": attempts}
                    )
                else:
                    values.update(next_attempt_at=following)
                    report.retrying += 1
            report.ids.append(item.id)
            # `attempts` guards against a second worker that took the row over after our lease ran out.
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == item.id, deliveries.c.attempts == item.attempts)
                .values(**values)
            )


async def deliver_due(
    engine: AsyncEngine,
    http: aiohttp.ClientSession,
    *,
    now: datetime | None = None,
    limit: int = 100,
    http_timeout: float = 10.0,
    concurrency: int = 10,
    backoff_scale: float = 1.0,
) -> DeliveryReport:
    """One pass of the delivery worker: post every due outbox row (up to `limit`), record the outcomes.

    `now` is the clock reading for this pass (tests pass their own clock); attempts are signed with it.
    `backoff_scale` shrinks the retry schedule (storage.webhooks.backoff), 1 in production.
    """
    now = now or utcnow()
    report = DeliveryReport()
    claimed = await _claim(engine, now, limit, CLAIM_LEASE + timedelta(seconds=http_timeout))
    if not claimed:
        return report
    gate = asyncio.Semaphore(concurrency)

    async def send(item: _Claimed) -> _Outcome:
        async with gate:
            return await _send(http, item, now, http_timeout)

    outcomes = await asyncio.gather(*(send(item) for item in claimed))
    await _record(engine, outcomes, now, report, backoff_scale)
    return report


def decode_body(body: str) -> Any:
    """A stored body as JSON data (for the deliveries API and tests)."""
    return msgspec.json.decode(body)
