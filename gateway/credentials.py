"""Which key a call goes upstream with: the request's own, the user's stored one, or the platform's.

A user's own key (per-request `X-Provider-Api-Key` header, else stored with `credentials set`) makes the
call BYOK: metered, not debited. Stored keys are decrypted per use and held only briefly in memory.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from gateway.errors import GatewayError
from gateway.providers.base import Credential
from storage.accounts.credentials import (
    CredentialError,
    cipher_for,
    decrypt_credential,
    get_encrypted_credential,
)
from storage.outage import is_outage

if TYPE_CHECKING:
    from cryptography.fernet import Fernet


class CredentialResolver:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        cipher: Fernet | None = None,
        *,
        secret_key: str | None = None,
    ) -> None:
        """`cipher`, or `secret_key` to build one on the first stored key met (so a worker whose users bring
        no stored key never loads cryptography's Fernet, ~8 MB); neither: stored keys are not used."""
        self._settings = settings
        self._engine = engine
        self._cipher = cipher
        self._secret_key = secret_key
        self._ttl = settings.key_cache_seconds
        # (user, provider) → (expiry, encrypted token or None): only ciphertext is held between requests.
        self._stored: dict[tuple[uuid.UUID, str], tuple[float, bytes | None]] = {}

    async def _stored_key(self, user_id: uuid.UUID, provider: str) -> str | None:
        if self._cipher is None and self._secret_key is None:
            return None
        now = time.monotonic()
        hit = self._stored.get((user_id, provider))
        if hit is not None and hit[0] > now:
            token = hit[1]
        else:
            try:
                async with self._engine.connect() as conn:
                    token = await get_encrypted_credential(conn, user_id, provider)
            except Exception as exc:
                # The database is unreachable: what was read within the outage grace period still stands (as
                # for keys, gateway/auth.py); with nothing cached the outage propagates (503 before upstream).
                grace = self._settings.key_outage_grace_seconds
                if not is_outage(exc) or hit is None or now - hit[0] > grace:
                    raise
                return self._decrypt(hit[1], provider)
            if len(self._stored) > 100_000:
                self._stored.clear()
            self._stored[(user_id, provider)] = (now + self._ttl, token)
        return self._decrypt(token, provider)

    def _decrypt(self, token: bytes | None, provider: str) -> str | None:
        if token is None:
            return None
        if self._cipher is None:
            if self._secret_key is None:
                return None
            self._cipher = cipher_for(self._secret_key)
        try:
            return decrypt_credential(self._cipher, token, provider)  # decrypted per use, never kept
        except CredentialError as exc:
            raise GatewayError(500, str(exc), type="server_error", code="credential_unreadable") from None

    async def resolve(self, user_id: uuid.UUID, provider: str, header_key: str | None) -> Credential:
        base_url = self._settings.provider(provider).base_url
        if header_key:
            return Credential(api_key=header_key.strip(), base_url=base_url, byok=True)
        stored = await self._stored_key(user_id, provider)
        if stored:
            return Credential(api_key=stored, base_url=base_url, byok=True)
        platform = self._settings.provider(provider).api_key
        if platform is None:
            raise GatewayError(
                503,
                f"No {provider} key is configured on this gateway; send your own in X-Provider-Api-Key.",
                type="server_error",
                code="provider_not_configured",
            )
        return Credential(api_key=platform.get_secret_value(), base_url=base_url, byok=False)

    def forget(self) -> None:
        self._stored.clear()
