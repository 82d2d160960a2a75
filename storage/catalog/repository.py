"""The llms table: as a pricing.Catalog for the request path, as typed rows for the admin reads, and price
versions that never rewrite charged history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pricing.catalog import Catalog, Model, PriceTier, Pricing
from storage.errors import ModelNotFound
from storage.models import Llm, LlmAlias, LlmPriceVersion, table_of
from storage.paging import Page, PageRequest, fetch_page, page_of
from storage.types import utcnow

llms = table_of(Llm)
versions = table_of(LlmPriceVersion)
aliases = table_of(LlmAlias)

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
        kind=row.kind,
    )


async def load_catalog(conn: AsyncConnection) -> Catalog:
    """Every catalog entry (active or not) with its current prices."""
    rows = (await conn.execute(select(llms).order_by(llms.c.id))).all()
    alias_rows = (await conn.execute(select(aliases.c.alias, aliases.c.llm_id))).all()
    return Catalog((_model(r) for r in rows), {a: int(i) for a, i in alias_rows})


async def catalog_fingerprint(conn: AsyncConnection) -> tuple[int, int, Any, int, Any]:
    """A cheap value that changes whenever the catalog does (for cache refresh), aliases included."""
    row = (
        await conn.execute(
            select(
                func.count(), func.coalesce(func.sum(llms.c.price_version), 0), func.max(llms.c.updated_at)
            )
        )
    ).one()
    alias_row = (await conn.execute(select(func.count(), func.max(aliases.c.created_at)))).one()
    return int(row[0]), int(row[1]), row[2], int(alias_row[0]), alias_row[1]


async def lock_model(conn: AsyncConnection, name: str) -> Any:
    """The catalog row of `name`, locked until the transaction ends (ModelNotFound when there is none)."""
    current = (await conn.execute(select(llms).where(llms.c.name == name).with_for_update())).one_or_none()
    if current is None:
        raise ModelNotFound(name)
    return current


async def insert_price_version(conn: AsyncConnection, current: Any, values: dict[str, Any]) -> int:
    """Record `values` (every price field) as the model's next price version and make it current.

    Past usage rows keep naming the version they were charged at, and that version's row is never changed.
    """
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
        raise ModelNotFound(name)


# -- admin reads -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prices:
    """A model's prices as stored, USD per 1M tokens; a missing cached/cache-write price bills at input."""

    input_price: Decimal
    output_price: Decimal
    cached_input_price: Decimal | None
    cache_write_price: Decimal | None
    long_context_threshold: int | None
    long_input_price: Decimal | None
    long_cached_input_price: Decimal | None
    long_cache_write_price: Decimal | None
    long_output_price: Decimal | None


def _prices(row: Any) -> Prices:
    return Prices(**{c: getattr(row, c) for c in PRICE_FIELDS})


@dataclass(frozen=True, slots=True)
class LlmInfo:
    id: int
    name: str
    provider: str
    upstream_model: str
    display_name: str
    is_active: bool
    price_version: int
    prices: Prices
    context_window: int
    max_output_tokens: int
    supports_vision: bool
    supports_tools: bool
    supports_streaming: bool
    updated_at: datetime
    aliases: tuple[str, ...] = ()  # other names the model answers to


@dataclass(frozen=True, slots=True)
class PriceVersionInfo:
    version: int
    effective_from: datetime
    prices: Prices


def _llm(row: Any, alias_names: Sequence[str] = ()) -> LlmInfo:
    return LlmInfo(
        id=int(row.id),
        name=row.name,
        provider=row.provider,
        upstream_model=row.upstream_model,
        display_name=row.display_name,
        is_active=bool(row.is_active),
        price_version=int(row.price_version),
        prices=_prices(row),
        context_window=int(row.context_window),
        max_output_tokens=int(row.max_output_tokens),
        supports_vision=bool(row.supports_vision),
        supports_tools=bool(row.supports_tools),
        supports_streaming=bool(row.supports_streaming),
        updated_at=row.updated_at,
        aliases=tuple(sorted(alias_names)),
    )


async def aliases_by_model(conn: AsyncConnection, llm_ids: Sequence[int]) -> dict[int, list[str]]:
    """The aliases of each of these models (one query)."""
    found: dict[int, list[str]] = {}
    if llm_ids:
        rows = await conn.execute(
            select(aliases.c.llm_id, aliases.c.alias).where(aliases.c.llm_id.in_(llm_ids))
        )
        for llm_id, alias in rows:
            found.setdefault(int(llm_id), []).append(alias)
    return found


async def list_llms(
    conn: AsyncConnection, page: PageRequest, *, active: bool | None = None, provider: str | None = None
) -> Page[LlmInfo]:
    """Catalog entries by id, optionally only (in)active ones or one provider's."""
    query = select(llms).order_by(llms.c.id)
    if active is not None:
        query = query.where(llms.c.is_active == active)
    if provider is not None:
        query = query.where(llms.c.provider == provider)
    rows, total = await fetch_page(conn, query, page)
    names = await aliases_by_model(conn, [int(r.id) for r in rows])
    return page_of([_llm(r, names.get(int(r.id), ())) for r in rows], total, page)


async def get_llm(conn: AsyncConnection, name: str) -> LlmInfo | None:
    row = (await conn.execute(select(llms).where(llms.c.name == name))).one_or_none()
    if row is None:
        return None
    return _llm(row, (await aliases_by_model(conn, [int(row.id)])).get(int(row.id), ()))


async def taken_names(conn: AsyncConnection, names: Sequence[str]) -> set[str]:
    """Those of `names` already used as a model name or an alias."""
    if not names:
        return set()
    wanted = set(names)
    taken = set((await conn.execute(select(llms.c.name).where(llms.c.name.in_(wanted)))).scalars())
    taken |= set((await conn.execute(select(aliases.c.alias).where(aliases.c.alias.in_(wanted)))).scalars())
    return taken


async def insert_model(conn: AsyncConnection, values: dict[str, Any], alias_names: Sequence[str]) -> int:
    """A new catalog row, its price version 1 and its aliases; the new model's id."""
    now = utcnow()
    llm_id = (
        await conn.execute(
            llms.insert()
            .values(**values, price_version=1, is_active=True, created_at=now, updated_at=now)
            .returning(llms.c.id)
        )
    ).scalar_one()
    prices = {name: values[name] for name in PRICE_FIELDS}
    await conn.execute(versions.insert().values(llm_id=llm_id, version=1, effective_from=now, **prices))
    await insert_aliases(conn, int(llm_id), alias_names)
    return int(llm_id)


async def insert_aliases(conn: AsyncConnection, llm_id: int, alias_names: Sequence[str]) -> None:
    """Make `alias_names` resolve to the model; its updated_at moves so every catalog cache reloads."""
    if not alias_names:
        return
    now = utcnow()
    await conn.execute(
        aliases.insert(), [{"alias": a, "llm_id": llm_id, "created_at": now} for a in alias_names]
    )
    await conn.execute(update(llms).where(llms.c.id == llm_id).values(updated_at=now))


async def price_history(conn: AsyncConnection, llm_id: int) -> list[PriceVersionInfo]:
    """Every price version of a model, oldest first: charged usage names the version it was priced at."""
    rows = (
        await conn.execute(select(versions).where(versions.c.llm_id == llm_id).order_by(versions.c.version))
    ).all()
    return [PriceVersionInfo(int(r.version), r.effective_from, _prices(r)) for r in rows]


async def unknown_models(conn: AsyncConnection, names: Sequence[str]) -> list[str]:
    """Those of `names` that are not in the catalog."""
    if not names:
        return []
    found = set((await conn.execute(select(llms.c.name).where(llms.c.name.in_(set(names))))).scalars())
    return [n for n in names if n not in found]
