"""Gateway-key authentication with an in-process cache.

Lookups are cached for `key_cache_seconds` (at most 5): a revoked key stops working on every worker
within that time without any cross-process signal. Misses (unknown keys) are cached too, briefly, so a
flood of bad keys does not become a flood of database reads.

While the database is unreachable, a key this process looked up successfully within the last
`key_outage_grace_seconds` keeps authenticating from the cache (the database cannot say otherwise); any
other key gets 503 + Retry-After, not a 401 (the key may well be valid) and never a 500. The price: a key
revoked shortly before or during an outage works on an instance that had it cached until the database
answers again (at most the grace period).
"""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import unauthorized
from gateway.outage import database_unavailable
from storage.accounts.keys import KeyPrincipal, hash_key, principal_for_key
from storage.outage import OutageWatch, is_outage


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise unauthorized("Missing API key: send 'Authorization: Bearer <SynapGate key>'.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Malformed Authorization header: expected 'Bearer <SynapGate key>'.")
    return token.strip()


class KeyAuthenticator:
    """Resolves a bearer key to its principal; cached per key hash for a few seconds (longer in an outage)."""

    def __init__(
        self,
        engine: AsyncEngine,
        cache_seconds: float,
        max_entries: int = 100_000,
        *,
        database: OutageWatch | None = None,
        outage_grace_seconds: float = 300.0,
    ) -> None:
        self._engine = engine
        self._ttl = cache_seconds
        self._max = max_entries
        self._database = database
        self._grace = outage_grace_seconds
        # key hash → (fresh until, principal or None for an unknown key, when it was read from the database)
        self._cache: dict[str, tuple[float, KeyPrincipal | None, float]] = {}

    async def authenticate(self, authorization: str | None) -> KeyPrincipal:
        token = bearer_token(authorization)
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            principal = hit[1]
        elif self._database is not None and self._database.down:
            principal = self._during_outage(hit, now)
        else:
            try:
                async with self._engine.connect() as conn:
                    principal = await principal_for_key(conn, token)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                if self._database is not None:
                    self._database.failed(exc)
                principal = self._during_outage(hit, now)
            else:
                if self._database is not None:
                    self._database.succeeded()
                if len(self._cache) >= self._max:
                    self._cache.clear()
                self._cache[digest] = (now + self._ttl, principal, now)
        if principal is None:
            raise unauthorized("Invalid API key: it is unknown or has been revoked.")
        return principal

    def _during_outage(
        self, hit: tuple[float, KeyPrincipal | None, float] | None, now: float
    ) -> KeyPrincipal | None:
        """The database cannot be asked: a key seen valid within the grace period passes, others wait."""
        if hit is not None and hit[1] is not None and now - hit[2] <= self._grace:
            return hit[1]
        raise database_unavailable()

    def forget(self) -> None:
        self._cache.clear()
