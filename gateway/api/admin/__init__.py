"""The admin, billing and analytics REST API under /api/v1 (JSON in and out, OpenAI-style error envelope).

One Controller per domain (accounts, billing, catalog, analytics, conversations) under the admin router,
which declares once what every handler gets: the caller guard, the dependencies (`caller`, `runtime`,
`engine`, `page`) and the mapping of the services' domain errors to the error envelope.
"""

from __future__ import annotations

from litestar import Router

from gateway.api.admin import accounts, analytics, billing, catalog, conversations, webhooks
from gateway.api.admin.common import domain_error_handler
from gateway.api.admin.scope import DEPENDENCIES, GUARDS
from storage.errors import DomainError


def admin_router() -> Router:
    guarded = Router(
        path="/",
        route_handlers=[
            accounts.AccountsController,
            billing.BillingController,
            catalog.CatalogController,
            analytics.AnalyticsController,
            conversations.ConversationsController,
            webhooks.WebhooksController,
        ],
        guards=GUARDS,
    )
    return Router(
        path="/api/v1",
        # Stripe's webhook is outside the caller guard: the Stripe signature over its body is its auth.
        route_handlers=[guarded, billing.StripeWebhookController],
        dependencies=DEPENDENCIES,
        exception_handlers={DomainError: domain_error_handler},
    )
