"""The catalog held in memory, reloaded when the llms table changes (checked every few seconds)."""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.catalog import Catalog
from storage.catalog.repository import catalog_fingerprint, load_catalog
from storage.outage import is_outage


class CatalogCache:
    def __init__(self, engine: AsyncEngine, check_seconds: float = 5.0) -> None:
        self._engine = engine
        self._check_seconds = check_seconds
        self._catalog = Catalog(())
        self._fingerprint: object = None
        self._checked = 0.0

    async def refresh(self) -> Catalog:
        """Reload the catalog now if it changed."""
        async with self._engine.connect() as conn:
            fingerprint = await catalog_fingerprint(conn)
            if fingerprint != self._fingerprint:
                self._catalog = await load_catalog(conn)
                self._fingerprint = fingerprint
        self._checked = time.monotonic()
        return self._catalog

    async def get(self) -> Catalog:
        """The current catalog; at most `check_seconds` stale."""
        if time.monotonic() - self._checked > self._check_seconds:
            try:
                return await self.refresh()
            except Exception as exc:
                # The database is unreachable: the catalog last loaded stands (a request can still be served
                # and spooled, storage/usage/spool.py); checked again after `check_seconds`.
                if not is_outage(exc) or self._fingerprint is None:
                    raise
                self._checked = time.monotonic()
        return self._catalog
