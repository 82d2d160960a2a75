"""Users' own provider keys (BYOK), encrypted at rest with a key derived from SYNAPGATE_SECRET_KEY.

Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`: authenticated, so a tampered or wrongly-keyed
ciphertext fails loudly instead of decrypting to garbage.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_for
from storage.models import ProviderCredential, table_of
from storage.types import utcnow

if TYPE_CHECKING:  # cryptography's Fernet is ~8 MB per process: imported when a key is encrypted or opened
    from cryptography.fernet import Fernet

credentials = table_of(ProviderCredential)


class CredentialError(Exception):
    """A stored provider key cannot be decrypted (wrong or rotated SYNAPGATE_SECRET_KEY)."""


def cipher_for(secret_key: str) -> Fernet:
    """The cipher for a secret of any length (SHA-256 of it gives Fernet its 32-byte key)."""
    from cryptography.fernet import Fernet

    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest()))


async def set_credential(
    conn: AsyncConnection, cipher: Fernet, user_id: uuid.UUID, provider: str, api_key: str
) -> str:
    """Store (or replace) a user's key for a provider; returns its last four characters."""
    now = utcnow()
    last4 = api_key[-4:]
    stmt = insert_for(conn, credentials).values(
        id=uuid.uuid4(),
        user_id=user_id,
        provider=provider,
        encrypted_key=cipher.encrypt(api_key.encode()),
        key_last4=last4,
        created_at=now,
        updated_at=now,
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["user_id", "provider"],
            set_={"encrypted_key": stmt.excluded.encrypted_key, "key_last4": last4, "updated_at": now},
        )
    )
    return last4


async def get_encrypted_credential(conn: AsyncConnection, user_id: uuid.UUID, provider: str) -> bytes | None:
    """A user's stored key for a provider, still encrypted (None when they stored none)."""
    token = (
        await conn.execute(
            select(credentials.c.encrypted_key).where(
                credentials.c.user_id == user_id, credentials.c.provider == provider
            )
        )
    ).scalar_one_or_none()
    return None if token is None else bytes(token)


def decrypt_credential(cipher: Fernet, token: bytes, provider: str) -> str:
    """The plaintext of a stored key; CredentialError when SYNAPGATE_SECRET_KEY cannot open it."""
    from cryptography.fernet import InvalidToken

    try:
        return cipher.decrypt(token).decode()
    except InvalidToken:
        raise CredentialError(
            f"the stored {provider} key cannot be decrypted with SYNAPGATE_SECRET_KEY"
        ) from None


async def get_credential(
    conn: AsyncConnection, cipher: Fernet, user_id: uuid.UUID, provider: str
) -> str | None:
    """A user's decrypted key for a provider, or None when they stored none."""
    token = await get_encrypted_credential(conn, user_id, provider)
    return None if token is None else decrypt_credential(cipher, token, provider)


async def delete_credential(conn: AsyncConnection, user_id: uuid.UUID, provider: str) -> bool:
    result = await conn.execute(
        credentials.delete().where(credentials.c.user_id == user_id, credentials.c.provider == provider)
    )
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class ProviderKeyInfo:
    """A stored provider key as it may be shown: the provider and the key's last four characters."""

    user_id: uuid.UUID
    provider: str
    key_last4: str
    created_at: datetime
    updated_at: datetime


_PROVIDER_KEY_COLUMNS = (
    credentials.c.user_id,
    credentials.c.provider,
    credentials.c.key_last4,
    credentials.c.created_at,
    credentials.c.updated_at,
)


def _provider_key(row: Any) -> ProviderKeyInfo:
    return ProviderKeyInfo(row.user_id, row.provider, row.key_last4, row.created_at, row.updated_at)


async def list_provider_keys(conn: AsyncConnection, user_id: uuid.UUID) -> list[ProviderKeyInfo]:
    rows = (
        await conn.execute(
            select(*_PROVIDER_KEY_COLUMNS)
            .where(credentials.c.user_id == user_id)
            .order_by(credentials.c.provider)
        )
    ).all()
    return [_provider_key(r) for r in rows]


async def get_provider_key(
    conn: AsyncConnection, user_id: uuid.UUID, provider: str
) -> ProviderKeyInfo | None:
    row = (
        await conn.execute(
            select(*_PROVIDER_KEY_COLUMNS).where(
                credentials.c.user_id == user_id, credentials.c.provider == provider
            )
        )
    ).one_or_none()
    return None if row is None else _provider_key(row)
