"""The admin, billing and analytics REST API under /api/v1 (JSON in and out, OpenAI-style error envelope).

One Controller per domain (accounts, billing, catalog, analytics, conversations, insights, webhooks) under
the admin router, which declares once what every handler gets: the caller guard, the dependencies (`caller`,
`runtime`, `engine`, `page`) and the mapping of the services' domain errors to the error envelope. Stripe's
webhook sits beside the guarded router: its signature is its authentication.
"""

from __future__ import annotations

from litestar import Router

from gateway.api.admin import accounts, analytics, billing, catalog, conversations, insights, webhooks
from gateway.api.admin.common import document_errors, domain_error_handler, refuse_hostile_body
from gateway.api.admin.scope import DEPENDENCIES, GUARDS
from storage.errors import DomainError

CONTROLLERS = (
    accounts.AccountsController,
    billing.BillingController,
    catalog.CatalogController,
    analytics.AnalyticsController,
    conversations.ConversationsController,
    insights.InsightsController,
    webhooks.WebhooksController,
)


def admin_router() -> Router:
    document_errors(*CONTROLLERS, billing.StripeWebhookController)  # the error envelope in the schema
    guarded = Router(path="/", route_handlers=list(CONTROLLERS), guards=GUARDS)
    return Router(
        path="/api/v1",
        # Stripe's webhook is outside the caller guard: the Stripe signature over its body is its auth.
        route_handlers=[guarded, billing.StripeWebhookController],
        dependencies=DEPENDENCIES,
        exception_handlers={DomainError: domain_error_handler},
        before_request=refuse_hostile_body,
    )
