"""The llms table as a pricing.Catalog, and price changes that never rewrite charged history."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pricing.catalog import Catalog, Model, PriceTier, Pricing
from storage.models import Llm, LlmPriceVersion, table_of
from storage.types import utcnow

llms = table_of(Llm)
versions = table_of(LlmPriceVersion)

PRICE_FIELDS = (
    "input_price",
    "cached_input_price",
    "cache_write_price",
    "output_price",
    "long_context_threshold",
    "long_input_price",
    "long_cached_input_price",
    "long_cache_write_price",
    "long_output_price",
)


class UnknownModel(Exception):
    """No catalog entry has that name."""


def _model(row: Any) -> Model:
    long = None
    if row.long_context_threshold is not None and row.long_input_price is not None:
        long = PriceTier(
            input=row.long_input_price,
            output=row.long_output_price,
            cached_input=row.long_cached_input_price,
            cache_write=row.long_cache_write_price,
        )
    return Model(
        id=row.id,
        name=row.name,
        provider=row.provider,
        upstream_model=row.upstream_model,
        display_name=row.display_name,
        pricing=Pricing(
            base=PriceTier(
                input=row.input_price,
                output=row.output_price,
                cached_input=row.cached_input_price,
                cache_write=row.cache_write_price,
            ),
            long_context_threshold=row.long_context_threshold,
            long_context=long,
        ),
        price_version=row.price_version,
        context_window=row.context_window,
        max_output_tokens=row.max_output_tokens,
        supports_vision=row.supports_vision,
        supports_tools=row.supports_tools,
        supports_streaming=row.supports_streaming,
        is_active=row.is_active,
    )


async def load_catalog(conn: AsyncConnection) -> Catalog:
    """Every catalog entry (active or not) with its current prices."""
    rows = (await conn.execute(select(llms).order_by(llms.c.id))).all()
    return Catalog(_model(r) for r in rows)


async def catalog_fingerprint(conn: AsyncConnection) -> tuple[int, int, Any]:
    """A cheap value that changes whenever the catalog does (for cache refresh)."""
    row = (
        await conn.execute(
            select(
                func.count(), func.coalesce(func.sum(llms.c.price_version), 0), func.max(llms.c.updated_at)
            )
        )
    ).one()
    return int(row[0]), int(row[1]), row[2]


@dataclass(frozen=True, slots=True)
class PriceChange:
    """New prices for a model, USD per 1M tokens. Omitted optional prices keep their current value."""

    input_price: Decimal
    output_price: Decimal
    cached_input_price: Decimal | None = None
    cache_write_price: Decimal | None = None
    long_context_threshold: int | None = None
    long_input_price: Decimal | None = None
    long_cached_input_price: Decimal | None = None
    long_cache_write_price: Decimal | None = None
    long_output_price: Decimal | None = None


async def set_price(conn: AsyncConnection, name: str, change: PriceChange, *, keep_unset: bool = True) -> int:
    """Record a new price version for `name` and make it current; returns the new version number.

    Past usage rows keep naming the version they were charged at, and that version's row is never changed.
    """
    current = (await conn.execute(select(llms).where(llms.c.name == name).with_for_update())).one_or_none()
    if current is None:
        raise UnknownModel(name)
    values: dict[str, Any] = {}
    for field in PRICE_FIELDS:
        new = getattr(change, field)
        values[field] = getattr(current, field) if new is None and keep_unset else new
    version = int(current.price_version) + 1
    now = utcnow()
    await conn.execute(
        versions.insert().values(llm_id=current.id, version=version, effective_from=now, **values)
    )
    await conn.execute(
        update(llms).where(llms.c.id == current.id).values(price_version=version, updated_at=now, **values)
    )
    return version


async def set_active(conn: AsyncConnection, name: str, active: bool) -> None:
    result = await conn.execute(
        update(llms).where(llms.c.name == name).values(is_active=active, updated_at=utcnow())
    )
    if not result.rowcount:
        raise UnknownModel(name)
