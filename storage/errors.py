"""Typed refusals of the domain rules, raised by the service functions of every storage domain.

Each consumer maps them once: the admin API to its error envelope (status, code, param), the CLI to its
one line. `code` is the stable machine name both show; `param` names the input the refusal is about (as the
API spells it); the message says what is wrong in words.
"""

from __future__ import annotations

import uuid
from datetime import datetime


class DomainError(Exception):
    """A rule refused the operation; nothing was changed."""

    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


# -- not found -------------------------------------------------------------------------------------


class NotFound(DomainError):
    """The object named does not exist (or is not visible to the caller)."""

    code = "not_found"


class UserNotFound(NotFound):
    code = "user_not_found"

    def __init__(self, user_id: uuid.UUID | None = None, *, param: str | None = None) -> None:
        super().__init__(f"no user with id {user_id}" if user_id else "no such user", param=param)
        self.user_id = user_id


class WorkspaceNotFound(NotFound):
    code = "workspace_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class ProviderKeyNotFound(NotFound):
    code = "provider_key_not_found"


class InvoiceNotFound(NotFound):
    code = "invoice_not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no model named {name!r} in the catalog", param="name")
        self.name = name


class ConversationNotFound(NotFound):
    code = "conversation_not_found"


class MessageNotFound(NotFound):
    code = "message_not_found"


class TagNotFound(NotFound):
    code = "tag_not_found"


# -- bad input -------------------------------------------------------------------------------------


class InvalidInput(DomainError):
    """A value breaks a rule of the domain (format, range, reference)."""

    code = "invalid_value"


class InvalidEmail(InvalidInput):
    code = "invalid_email"


class InvalidAmount(InvalidInput):
    code = "invalid_amount"


class InvalidPrice(InvalidInput):
    code = "invalid_price"


class InvalidPeriod(InvalidInput):
    code = "invalid_period"


class InvalidPage(InvalidInput):
    code = "invalid_page"


class UnknownModels(InvalidInput):
    """An allow-list names models that are not in the catalog."""

    code = "unknown_models"

    def __init__(self, names: list[str], *, param: str = "allowed_models") -> None:
        super().__init__(f"models not in the catalog: {', '.join(names)}", param=param)
        self.names = names


class NotAMember(InvalidInput):
    """A key was asked to bill a workspace its user does not belong to."""

    code = "not_a_member"

    def __init__(self, user_id: uuid.UUID, workspace_id: uuid.UUID) -> None:
        super().__init__(f"user {user_id} is not a member of workspace {workspace_id}", param="workspace_id")
        self.user_id = user_id
        self.workspace_id = workspace_id


# -- conflicts -------------------------------------------------------------------------------------


class Conflict(DomainError):
    """The operation contradicts what is stored already."""

    code = "conflict"


class DuplicateEmail(Conflict):
    code = "user_exists"

    def __init__(self, email: str) -> None:
        super().__init__(f"a user with email {email} exists already", param="email")
        self.email = email


class IdempotencyConflict(Conflict):
    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"the idempotency key {key!r} was used for a different top-up; nothing was added",
            param="idempotency_key",
        )
        self.key = key


class InvoiceOverlap(Conflict):
    """The period intersects an invoice the user has already (not void)."""

    code = "invoice_period_overlap"

    def __init__(self, invoice_id: uuid.UUID, period_start: datetime, period_end: datetime) -> None:
        super().__init__(
            f"the period overlaps invoice {invoice_id} ({period_start.isoformat()} to "
            f"{period_end.isoformat()}); a period is invoiced once",
            param="period_start",
        )
        self.invoice_id = invoice_id
        self.period_start = period_start
        self.period_end = period_end


class NotConfigured(DomainError):
    """The operation needs a setting the deployment lacks."""

    code = "not_configured"


class Unavailable(DomainError):
    """A helper process the operation needs does not answer now (e.g. the tagger process restarting);
    nothing was changed, and trying again later may work."""

    code = "temporarily_unavailable"


class SecretKeyMissing(NotConfigured):
    code = "secret_key_not_configured"


class PartitioningUnsupported(NotConfigured):
    """Monthly partitions of usage_logs exist on PostgreSQL only (the embedded SQLite keeps one table)."""

    code = "partitioning_unsupported"
