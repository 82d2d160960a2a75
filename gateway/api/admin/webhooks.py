"""Admin API: webhook alert endpoints and their deliveries, and a user's alert thresholds.

The admin key manages every endpoint; a user key manages its own endpoints only (anything else is 404, as
if it did not exist). The signing secret (`whsec_…`) is in the creation answer and never again. The rules
live in storage/webhooks/service.py and storage/webhooks/alerts.py; their refusals are domain errors,
mapped once on the admin router.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from gateway.api.admin.common import Body, Struct, shape
from gateway.api.admin.scope import Caller, Engine, Paging, Scope
from pricing.money import format_usd
from storage.webhooks import alerts, service
from storage.webhooks.payloads import EVENT_TYPES

# -- response shapes -----------------------------------------------------------------------------


class EndpointOut(Struct):
    """An endpoint as listed: never its secret."""

    id: uuid.UUID
    url: str
    format: str
    events: list[str]
    user_id: uuid.UUID | None
    workspace_id: uuid.UUID | None
    description: str | None
    created_at: datetime


class EndpointCreatedOut(EndpointOut):
    """A new endpoint: `secret` verifies its deliveries (Standard Webhooks), returned this once."""

    secret: str
    note: str = "the signing secret is shown only once; store it now"


class EndpointPage(Struct):
    data: list[EndpointOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class DeliveryOut(Struct):
    """One event sent (or being sent) to an endpoint; `webhook_id` is the `webhook-id` header."""

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


class DeliveryPage(Struct):
    data: list[DeliveryOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class AlertsOut(Struct):
    user_id: uuid.UUID
    low_balance_usd: str | None
    low_balance_nano: int | None


# -- request shapes ------------------------------------------------------------------------------


class CreateEndpointIn(Body):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    events: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=64)]],
        msgspec.Meta(min_length=1, max_length=len(EVENT_TYPES), description=", ".join(EVENT_TYPES)),
    ]
    user_id: uuid.UUID | None = None
    workspace_id: uuid.UUID | None = None
    format: Literal["json", "slack"] | None = None
    description: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class SetAlertsIn(Body):
    low_balance_usd: Annotated[
        str | None, msgspec.Meta(description='decimal USD, e.g. "5.00"; null turns the alert off')
    ]


def webhook_scope(caller: Scope) -> service.WebhookScope:
    """The admin sees every endpoint; a user key its own only."""
    return service.WebhookScope(user_id=caller.user_id)


def alerts_out(settings: alerts.AlertSettings) -> AlertsOut:
    nano = settings.low_balance_threshold_nano
    return AlertsOut(
        user_id=settings.user_id,
        low_balance_usd=None if nano is None else format_usd(nano),
        low_balance_nano=nano,
    )


class WebhooksController(Controller):
    """Webhook endpoints, their deliveries, and alert thresholds. (Guard and dependencies: admin router.)"""

    path = "/"
    tags = ("webhooks",)

    @post("/webhooks", status_code=201)
    async def create_webhook_route(
        self, caller: Caller, engine: Engine, data: JSONBody[CreateEndpointIn]
    ) -> EndpointCreatedOut:
        """Register an endpoint for event types, optionally scoped to a user or workspace (a user key: its
        own). The `whsec_…` signing secret is in this answer only. A hooks.slack.com URL gets Slack text."""
        async with engine.begin() as conn:
            created = await service.create_endpoint(
                conn,
                webhook_scope(caller),
                url=data.url,
                events=data.events,
                user_id=data.user_id,
                workspace_id=data.workspace_id,
                format=data.format,
                description=data.description,
            )
        return msgspec.convert(
            {**msgspec.to_builtins(shape(created.endpoint, EndpointOut)), "secret": created.secret},
            EndpointCreatedOut,
        )

    @get("/webhooks")
    async def list_webhooks_route(self, caller: Caller, engine: Engine, page: Paging) -> EndpointPage:
        """The endpoints the caller may see (never their secrets), oldest first."""
        async with engine.connect() as conn:
            found, total = await service.list_endpoints(
                conn, webhook_scope(caller), limit=page.limit, offset=page.offset
            )
        return EndpointPage(
            data=[shape(e, EndpointOut) for e in found],
            total=total,
            limit=page.limit,
            offset=page.offset,
            has_more=page.offset + len(found) < total,
        )

    @get("/webhooks/{webhook_id:uuid}")
    async def get_webhook_route(
        self, caller: Caller, engine: Engine, webhook_id: FromPath[uuid.UUID]
    ) -> EndpointOut:
        """One endpoint (without its secret)."""
        async with engine.connect() as conn:
            return shape(await service.get_endpoint(conn, webhook_scope(caller), webhook_id), EndpointOut)

    @delete("/webhooks/{webhook_id:uuid}")
    async def delete_webhook_route(
        self, caller: Caller, engine: Engine, webhook_id: FromPath[uuid.UUID]
    ) -> None:
        """Delete an endpoint and its pending deliveries: nothing more is sent to it."""
        async with engine.begin() as conn:
            await service.delete_endpoint(conn, webhook_scope(caller), webhook_id)

    @get("/webhooks/{webhook_id:uuid}/deliveries")
    async def list_deliveries_route(
        self,
        caller: Caller,
        engine: Engine,
        page: Paging,
        webhook_id: FromPath[uuid.UUID],
        status: FromQuery[Literal["pending", "delivered", "failed"] | None] = None,
    ) -> DeliveryPage:
        """An endpoint's deliveries, newest first: status, attempts, next attempt, last HTTP status/error."""
        async with engine.connect() as conn:
            found, total = await service.list_deliveries(
                conn, webhook_scope(caller), webhook_id, status=status, limit=page.limit, offset=page.offset
            )
        return DeliveryPage(
            data=[shape(d, DeliveryOut) for d in found],
            total=total,
            limit=page.limit,
            offset=page.offset,
            has_more=page.offset + len(found) < total,
        )

    @get("/users/{user_id:uuid}/alerts")
    async def get_alerts_route(
        self, caller: Caller, engine: Engine, user_id: FromPath[uuid.UUID]
    ) -> AlertsOut:
        """A user's alert thresholds."""
        caller.require_user(user_id)
        async with engine.connect() as conn:
            return alerts_out(await alerts.get_alert_settings(conn, user_id))

    @put("/users/{user_id:uuid}/alerts")
    async def set_alerts_route(
        self, caller: Caller, engine: Engine, user_id: FromPath[uuid.UUID], data: JSONBody[SetAlertsIn]
    ) -> AlertsOut:
        """Set the balance under which `credits.low` is sent (when a call takes the balance below it)."""
        caller.require_user(user_id)
        threshold = alerts.parse_threshold(data.low_balance_usd)
        async with engine.begin() as conn:
            return alerts_out(await alerts.set_low_balance_threshold(conn, user_id, threshold))
