"""The catalog's rules: what a price is, and price versions that keep the prices a change leaves unset.

Prices are exact decimals of USD per 1M tokens that the NUMERIC(18, 9) columns hold without rounding.
A change names the prices it sets: an optional price it leaves out (`KEEP`) keeps its current value; one it
sets to None is cleared (then billed at the input price). The long-context tier needs its threshold and its
input and output prices together.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from storage.catalog import repository
from storage.catalog.repository import LlmInfo, PriceVersionInfo
from storage.errors import InvalidPrice, ModelNotFound

MAX_RATE = Decimal(10) ** 9  # NUMERIC(18, 9): nine digits each side of the point


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP
"""A price the change leaves as it is."""


@dataclass(frozen=True, slots=True)
class PriceChange:
    """New prices for a model, USD per 1M tokens; KEEP (the default) leaves an optional price unchanged."""

    input_price: Decimal
    output_price: Decimal
    cached_input_price: Decimal | _Keep | None = KEEP
    cache_write_price: Decimal | _Keep | None = KEEP
    long_context_threshold: int | _Keep | None = KEEP
    long_input_price: Decimal | _Keep | None = KEEP
    long_cached_input_price: Decimal | _Keep | None = KEEP
    long_cache_write_price: Decimal | _Keep | None = KEEP
    long_output_price: Decimal | _Keep | None = KEEP


def parse_rate(value: str | Decimal, param: str) -> Decimal:
    """A price in USD per 1M tokens as the catalog's NUMERIC(18, 9) columns can hold it exactly."""
    try:
        rate = Decimal(value.strip()) if isinstance(value, str) else value
    except InvalidOperation:
        raise InvalidPrice(f"not a decimal price: {value!r}", param=param) from None
    if not rate.is_finite() or rate < 0:
        raise InvalidPrice(f"a price must be zero or more: {value!r}", param=param)
    if rate >= MAX_RATE:
        raise InvalidPrice(f"a price must be below {MAX_RATE} USD per 1M tokens: {value!r}", param=param)
    if rate != rate.quantize(Decimal("1e-9")):
        raise InvalidPrice(f"a price has at most 9 decimal places: {value!r}", param=param)
    return rate


def _resolved(current: Any, change: PriceChange) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields(change):
        new = getattr(change, f.name)
        values[f.name] = getattr(current, f.name) if new is KEEP else new
    for name, value in values.items():
        if name != "long_context_threshold" and value is not None:
            values[name] = parse_rate(value, name)
    threshold = values["long_context_threshold"]
    if threshold is not None and (not isinstance(threshold, int) or threshold < 1):
        raise InvalidPrice("'long_context_threshold' must be 1 or more", param="long_context_threshold")
    long_given = [
        n for n in values if n.startswith("long_") and n != "long_context_threshold" and values[n] is not None
    ]
    if threshold is None and long_given:
        raise InvalidPrice(
            f"'{long_given[0]}' needs 'long_context_threshold' (the prompt size the long tier starts above)",
            param="long_context_threshold",
        )
    if threshold is not None:
        for needed in ("long_input_price", "long_output_price"):
            if values[needed] is None:
                raise InvalidPrice(f"'{needed}' is required with 'long_context_threshold'", param=needed)
    return values


async def set_price(conn: AsyncConnection, name: str, change: PriceChange) -> int:
    """Record a new price version of `name` (unset prices kept) and make it current; the new version."""
    current = await repository.lock_model(conn, name)
    return await repository.insert_price_version(conn, current, _resolved(current, change))


async def set_active(conn: AsyncConnection, name: str, active: bool) -> LlmInfo:
    """Serve (or stop serving) a model; its history stays."""
    await repository.set_active(conn, name, active)
    model = await repository.get_llm(conn, name)
    assert model is not None
    return model


async def model_with_history(conn: AsyncConnection, name: str) -> tuple[LlmInfo, list[PriceVersionInfo]]:
    """A model and every price version it has had (ModelNotFound when there is none)."""
    model = await repository.get_llm(conn, name)
    if model is None:
        raise ModelNotFound(name)
    return model, await repository.price_history(conn, model.id)
