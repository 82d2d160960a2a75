"""Gateway-key authentication with an in-process cache.

Lookups are cached for `key_cache_seconds` (at most 5): a revoked key stops working on every worker
within that time without any cross-process signal. Misses (unknown keys) are cached too, briefly, so a
flood of bad keys does not become a flood of database reads.
"""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import unauthorized
from storage.accounts.keys import KeyPrincipal, hash_key, principal_for_key


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise unauthorized("Missing API key: send 'Authorization: Bearer <SynapGate key>'.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Malformed Authorization header: expected 'Bearer <SynapGate key>'.")
    return token.strip()


class KeyAuthenticator:
    """Resolves a bearer key to its principal; cached per key hash for a few seconds."""

    def __init__(self, engine: AsyncEngine, cache_seconds: float, max_entries: int = 100_000) -> None:
        self._engine = engine
        self._ttl = cache_seconds
        self._max = max_entries
        self._cache: dict[str, tuple[float, KeyPrincipal | None]] = {}

    async def authenticate(self, authorization: str | None) -> KeyPrincipal:
        token = bearer_token(authorization)
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            principal = hit[1]
        else:
            async with self._engine.connect() as conn:
                principal = await principal_for_key(conn, token)
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        if principal is None:
            raise unauthorized("Invalid API key: it is unknown or has been revoked.")
        return principal

    def forget(self) -> None:
        self._cache.clear()
