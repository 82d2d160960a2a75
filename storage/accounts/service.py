"""The accounts rules, held once for the admin API and the CLI.

- an email is one address, stored lower-case, unique among users (`InvalidEmail`, `DuplicateEmail`);
- a key belongs to an existing user (`UserNotFound`), bills a workspace that user is a member of
  (`NotAMember`), and its allow-list names catalog models only (`UnknownModels`);
- a workspace's members are existing users;
- a stored provider key is one token, encrypted with SYNAPGATE_SECRET_KEY (`NotConfigured` without it).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from config import PROVIDERS
from storage.accounts import credentials, keys, users
from storage.accounts.credentials import ProviderKeyInfo
from storage.accounts.keys import CreatedKey, KeyInfo
from storage.accounts.users import UserDetail, UserInfo, WorkspaceInfo
from storage.billing.ledger.base import CreditLedger, HotMove
from storage.billing.ledger.entries import post_entry
from storage.billing.service import parse_amount
from storage.catalog.repository import unknown_models
from storage.errors import (
    InvalidEmail,
    InvalidInput,
    KeyNotFound,
    NotAMember,
    ProviderKeyNotFound,
    SecretKeyMissing,
    UnknownModels,
    UserNotFound,
)
from storage.paging import Page, PageRequest

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL = 320


def normalize_email(value: str, param: str = "email") -> str:
    """The stored form of an email address (lower-case); InvalidEmail when it is not one."""
    email = value.strip().lower()
    if not EMAIL.match(email) or len(email) > MAX_EMAIL:
        raise InvalidEmail(f"not an email address: {value!r}", param=param)
    return email


require_user = users.require_user


# -- users -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewUser:
    """A created user with their own workspace and opening balance."""

    user_id: uuid.UUID
    email: str
    workspace_id: uuid.UUID
    workspace_name: str
    balance_nano: int


async def create_user(
    engine: AsyncEngine,
    ledger: CreditLedger,
    email: str,
    *,
    name: str | None = None,
    workspace_name: str | None = None,
    credits_usd: str | None = None,
) -> NewUser:
    """A user, their workspace (owned) and credit account, and their first credit: all or nothing."""
    email = normalize_email(email)
    credit = parse_amount(credits_usd, "credits_usd") if credits_usd is not None else 0
    posted = None
    async with engine.begin() as conn:
        user = await users.create_user(conn, email, name=name, workspace_name=workspace_name)
        if credit:
            posted = await post_entry(
                conn,
                user_id=user.user_id,
                type="credit",
                amount_nano=credit,
                idempotency_key=f"credit:signup:{user.user_id}",
                description="initial credits",
            )
    if posted is not None:
        await ledger.after_commit([HotMove(user.user_id, None, credit, posted.version)])
    balance = posted.balance_nano if posted is not None else 0
    return NewUser(user.user_id, user.email, user.workspace_id, user.workspace_name, balance)


async def user_detail(conn: AsyncConnection, user_id: uuid.UUID) -> UserDetail:
    """A user with their workspaces, balance and active keys; UserNotFound when there is none."""
    detail = await users.user_detail(conn, user_id)
    if detail is None:
        raise UserNotFound(user_id, param=None)
    return detail


async def list_users(
    conn: AsyncConnection,
    page: PageRequest,
    *,
    only_user: uuid.UUID | None = None,
    email: str | None = None,
    status: str | None = None,
) -> Page[UserInfo]:
    """Users oldest first; an email filter must be an email address."""
    email = normalize_email(email) if email is not None else None
    return await users.list_users(conn, page, only_user=only_user, email=email, status=status)


# -- workspaces ------------------------------------------------------------------------------------


async def create_workspace(
    conn: AsyncConnection, name: str, owner: uuid.UUID | None, member_ids: Sequence[uuid.UUID]
) -> WorkspaceInfo:
    """A workspace with an optional owner and members, all existing users."""
    roles: dict[uuid.UUID, str] = {}
    if owner is not None:
        roles[owner] = "owner"
    for member in member_ids:
        roles.setdefault(member, "member")
    missing = await users.missing_users(conn, list(roles))
    if missing:
        raise UserNotFound(missing[0], param="owner_user_id" if missing[0] == owner else "member_user_ids")
    return await users.insert_workspace(conn, name, list(roles.items()))


async def list_workspaces(
    conn: AsyncConnection, page: PageRequest, *, member: uuid.UUID | None = None
) -> Page[WorkspaceInfo]:
    return await users.list_workspaces(conn, page, member=member)


# -- gateway keys ----------------------------------------------------------------------------------


async def create_key(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    *,
    workspace_id: uuid.UUID | None = None,
    name: str | None = None,
    allowed_models: Sequence[str] | None = None,
) -> CreatedKey:
    """A new key of an existing user, billing one of their workspaces (default: their own), limited to
    catalog models when an allow-list is given. The plaintext is in the result only."""
    await require_user(conn, user_id)
    models: list[str] | None = None
    if allowed_models is not None:
        models = list(dict.fromkeys(m.strip() for m in allowed_models if m.strip()))
        if not models:
            raise InvalidInput(
                "the allow-list is empty: omit it to allow every model", param="allowed_models"
            )
        unknown = await unknown_models(conn, models)
        if unknown:
            raise UnknownModels(unknown)
    if workspace_id is None:
        workspace_id = await users.default_workspace(conn, user_id)
    elif await users.workspace_role(conn, workspace_id, user_id) is None:
        raise NotAMember(user_id, workspace_id)
    key_id, plaintext = await keys.create_key(
        conn, user_id, workspace_id=workspace_id, name=name, allowed_models=models
    )
    info = await keys.get_key(conn, key_id)
    assert info is not None
    return CreatedKey(**{f.name: getattr(info, f.name) for f in fields(KeyInfo)}, key=plaintext)


async def get_key(conn: AsyncConnection, key_id: uuid.UUID, *, owner: uuid.UUID | None = None) -> KeyInfo:
    """A key (of `owner`, when given); KeyNotFound otherwise."""
    key = await keys.get_key(conn, key_id)
    if key is None or (owner is not None and key.user_id != owner):
        raise KeyNotFound(f"no key with id {key_id}", param="key_id")
    return key


async def list_keys(
    conn: AsyncConnection, page: PageRequest, *, user_id: uuid.UUID | None = None, status: str | None = None
) -> Page[KeyInfo]:
    return await keys.list_keys(conn, page, user_id=user_id, status=status)


async def revoke_key(conn: AsyncConnection, key_id: uuid.UUID) -> KeyInfo:
    """Revoke a key (idempotent: a revoked key stays revoked); KeyNotFound when there is none."""
    await get_key(conn, key_id)
    await keys.revoke_key(conn, key_id)
    revoked = await keys.get_key(conn, key_id)
    assert revoked is not None
    return revoked


# -- provider keys (BYOK) --------------------------------------------------------------------------


def check_provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise InvalidInput(
            f"the provider must be one of {', '.join(PROVIDERS)}, not {provider!r}", param="provider"
        )
    return provider


async def set_provider_key(
    conn: AsyncConnection, secret_key: str | None, user_id: uuid.UUID, provider: str, api_key: str
) -> ProviderKeyInfo:
    """Store (or replace) a user's own provider key, encrypted; only its last four characters come back."""
    check_provider(provider)
    if secret_key is None:
        raise SecretKeyMissing(
            "SYNAPGATE_SECRET_KEY is not set: it is needed to encrypt stored provider keys"
        )
    api_key = api_key.strip()
    if not api_key:
        raise InvalidInput("no provider key was given", param="api_key")
    if any(c.isspace() for c in api_key):
        raise InvalidInput("the provider key contains spaces; give only the key", param="api_key")
    await require_user(conn, user_id, param=None)
    await credentials.set_credential(conn, credentials.cipher_for(secret_key), user_id, provider, api_key)
    stored = await credentials.get_provider_key(conn, user_id, provider)
    assert stored is not None
    return stored


async def delete_provider_key(conn: AsyncConnection, user_id: uuid.UUID, provider: str) -> None:
    check_provider(provider)
    if not await credentials.delete_credential(conn, user_id, provider):
        raise ProviderKeyNotFound(f"no stored {provider} key for this user", param="provider")


async def list_provider_keys(conn: AsyncConnection, user_id: uuid.UUID) -> list[ProviderKeyInfo]:
    await require_user(conn, user_id, param=None)
    return await credentials.list_provider_keys(conn, user_id)
