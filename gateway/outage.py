"""Answers for outages of the backing services: 503 + Retry-After in the OpenAI envelope, never a 500.

Each is decided before the upstream call, so the platform never pays a provider for an answer it could
not reserve or record; nothing is charged.
"""

from __future__ import annotations

from gateway.errors import GatewayError

RETRY_AFTER_SECONDS = 1


def database_unavailable() -> GatewayError:
    """PostgreSQL (or the database) is unreachable: the request could not be recorded, so it is refused."""
    return GatewayError(
        503,
        "The gateway's database is unreachable, so this request cannot be recorded; it was not sent to the "
        "provider and nothing was charged. Retry shortly.",
        type="server_error",
        code="database_unavailable",
        headers={"retry-after": str(RETRY_AFTER_SECONDS)},
    )


def ledger_unavailable() -> GatewayError:
    """Redis (the credit ledger's hot copy) is unreachable: credit cannot be reserved, so it is refused."""
    return GatewayError(
        503,
        "The gateway's credit ledger is unreachable, so credit cannot be reserved; the request was not sent "
        "to the provider and nothing was charged. Retry shortly.",
        type="server_error",
        code="ledger_unavailable",
        headers={"retry-after": str(RETRY_AFTER_SECONDS)},
    )


def backend_unavailable() -> GatewayError:
    """Any other request that met an unreachable database or Redis (admin API, dashboard, catalog)."""
    return GatewayError(
        503,
        "A service the gateway depends on (its database or Redis) is unreachable. Retry shortly.",
        type="server_error",
        code="service_unavailable",
        headers={"retry-after": str(RETRY_AFTER_SECONDS)},
    )
