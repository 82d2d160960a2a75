"""Admin API: the model catalog — list, show with price history, set a new price version, (de)activate.

Prices are exact decimal strings of USD per 1M tokens (never floats). A price change is a new price
version: usage already charged keeps naming the version (and the cost) it was charged at, and the
versions' rows are never rewritten. Reading the catalog is open to any valid key; changing it needs the
admin key. This worker's catalog cache is refreshed at once, other workers' within seconds.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from gateway.api.admin.common import Body, Limit, Offset, Struct, page_limits, runtime_of
from gateway.api.admin.scope import GUARDS, caller
from gateway.errors import GatewayError, bad_request
from pricing.money import TOKENS_PER_PRICE_UNIT
from storage import admin as queries
from storage.catalog.repository import PriceChange, UnknownModel, set_active, set_price

MAX_RATE = Decimal(10) ** 9  # NUMERIC(18, 9): nine digits each side of the point
PRICE_UNIT = f"USD per {TOKENS_PER_PRICE_UNIT} tokens"

# -- response shapes -----------------------------------------------------------------------------


class PricesOut(Struct):
    """USD per 1M tokens as stored. A null cached/cache-write price bills those tokens at `input`;
    the long-context tier applies above `long_context_threshold` prompt tokens."""

    unit: str
    input: str
    output: str
    cached_input: str | None
    cache_write: str | None
    long_context_threshold: int | None
    long_input: str | None
    long_cached_input: str | None
    long_cache_write: str | None
    long_output: str | None


class LlmOut(Struct):
    id: int
    name: str
    provider: str
    upstream_model: str
    display_name: str
    is_active: bool
    price_version: int
    prices: PricesOut
    context_window: int
    max_output_tokens: int
    supports_vision: bool
    supports_tools: bool
    supports_streaming: bool
    updated_at: datetime


class PriceVersionOut(Struct):
    version: int
    effective_from: datetime
    prices: PricesOut


class LlmDetailOut(LlmOut):
    price_history: list[PriceVersionOut]


class LlmPage(Struct):
    data: list[LlmOut]
    total: int
    limit: int
    offset: int
    has_more: bool


def _rate_text(value: Decimal | None) -> str | None:
    """A rate as plain decimal text without trailing zeros ('2.5', '10'), the same on every database."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return text


def _prices_out(p: queries.Prices) -> PricesOut:
    return PricesOut(
        unit=PRICE_UNIT,
        input=_rate_text(p.input_price) or "0",
        output=_rate_text(p.output_price) or "0",
        cached_input=_rate_text(p.cached_input_price),
        cache_write=_rate_text(p.cache_write_price),
        long_context_threshold=p.long_context_threshold,
        long_input=_rate_text(p.long_input_price),
        long_cached_input=_rate_text(p.long_cached_input_price),
        long_cache_write=_rate_text(p.long_cache_write_price),
        long_output=_rate_text(p.long_output_price),
    )


def _llm_fields(m: queries.LlmInfo) -> dict[str, Any]:
    return {
        "id": m.id,
        "name": m.name,
        "provider": m.provider,
        "upstream_model": m.upstream_model,
        "display_name": m.display_name,
        "is_active": m.is_active,
        "price_version": m.price_version,
        "prices": _prices_out(m.prices),
        "context_window": m.context_window,
        "max_output_tokens": m.max_output_tokens,
        "supports_vision": m.supports_vision,
        "supports_tools": m.supports_tools,
        "supports_streaming": m.supports_streaming,
        "updated_at": m.updated_at,
    }


# -- request shape -------------------------------------------------------------------------------

Rate = Annotated[str, msgspec.Meta(min_length=1, max_length=30, description='USD per 1M tokens, e.g. "2.50"')]


class SetPriceIn(Body):
    """The complete new price set (PUT): an omitted optional price is cleared, not kept."""

    input_price: Rate
    output_price: Rate
    cached_input_price: Rate | None = None
    cache_write_price: Rate | None = None
    long_context_threshold: Annotated[int, msgspec.Meta(ge=1)] | None = None
    long_input_price: Rate | None = None
    long_cached_input_price: Rate | None = None
    long_cache_write_price: Rate | None = None
    long_output_price: Rate | None = None


def _rate(value: str | None, field: str) -> Decimal | None:
    if value is None:
        return None
    try:
        rate = Decimal(value.strip())
    except InvalidOperation:
        raise bad_request(f"'{field}' is not a decimal price: {value!r}.", param=field) from None
    if not rate.is_finite() or rate < 0:
        raise bad_request(f"'{field}' must be zero or more.", param=field)
    exponent = rate.as_tuple().exponent
    if (isinstance(exponent, int) and exponent < -9) or rate >= MAX_RATE:
        raise bad_request(
            f"'{field}' must have at most nine decimal places and be below {MAX_RATE}.", param=field
        )
    return rate


def _price_change(data: JSONBody[SetPriceIn]) -> PriceChange:
    rates = {
        name: _rate(getattr(data, name), name)
        for name in (
            "input_price",
            "output_price",
            "cached_input_price",
            "cache_write_price",
            "long_input_price",
            "long_cached_input_price",
            "long_cache_write_price",
            "long_output_price",
        )
    }
    long_given = [n for n in rates if n.startswith("long_") and rates[n] is not None]
    if data.long_context_threshold is None and long_given:
        raise bad_request(
            f"'{long_given[0]}' needs 'long_context_threshold' (the prompt size the long tier starts above).",
            param="long_context_threshold",
        )
    if data.long_context_threshold is not None:
        for needed in ("long_input_price", "long_output_price"):
            if rates[needed] is None:
                raise bad_request(f"'{needed}' is required with 'long_context_threshold'.", param=needed)
    input_price, output_price = rates.pop("input_price"), rates.pop("output_price")
    assert input_price is not None and output_price is not None
    return PriceChange(
        input_price=input_price,
        output_price=output_price,
        long_context_threshold=data.long_context_threshold,
        **rates,
    )


def _model_not_found(name: str) -> GatewayError:
    return GatewayError(404, f"No model named {name!r} in the catalog.", code="model_not_found")


async def _detail(request: Request[Any, Any, Any], name: FromPath[str]) -> LlmDetailOut:
    async with runtime_of(request).engine.connect() as conn:
        model = await queries.get_llm(conn, name)
        if model is None:
            raise _model_not_found(name)
        history = await queries.price_history(conn, model.id)
    return LlmDetailOut(
        **_llm_fields(model),
        price_history=[
            PriceVersionOut(version=v.version, effective_from=v.effective_from, prices=_prices_out(v.prices))
            for v in history
        ],
    )


# -- routes --------------------------------------------------------------------------------------


@get("/llms", guards=GUARDS, tags=["catalog"])
async def list_llms_route(
    request: Request[Any, Any, Any],
    active: FromQuery[bool | None] = None,
    provider: FromQuery[str | None] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> LlmPage:
    """The catalog by id, active and inactive models, with their current prices."""
    limit, offset = page_limits(limit, offset)
    async with runtime_of(request).engine.connect() as conn:
        page = await queries.list_llms(conn, active=active, provider=provider, limit=limit, offset=offset)
    return LlmPage(
        data=[LlmOut(**_llm_fields(m)) for m in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
        has_more=offset + len(page.items) < page.total,
    )


@get("/llms/{name:str}", guards=GUARDS, tags=["catalog"])
async def get_llm_route(request: Request[Any, Any, Any], name: FromPath[str]) -> LlmDetailOut:
    """One model with every price version it has had."""
    return await _detail(request, name)


@put("/llms/{name:str}", guards=GUARDS, tags=["catalog"])
async def set_price_route(
    request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[SetPriceIn]
) -> LlmDetailOut:
    """Give a model a new price version (the complete price set); charged usage keeps its own. Admin only."""
    caller(request).require_admin()
    change = _price_change(data)
    runtime = runtime_of(request)
    try:
        async with runtime.engine.begin() as conn:
            await set_price(conn, name, change, keep_unset=False)
    except UnknownModel:
        raise _model_not_found(name) from None
    await runtime.chat.catalog.refresh()
    return await _detail(request, name)


async def _set_active(request: Request[Any, Any, Any], name: str, active: bool) -> LlmOut:
    caller(request).require_admin()
    runtime = runtime_of(request)
    try:
        async with runtime.engine.begin() as conn:
            await set_active(conn, name, active)
    except UnknownModel:
        raise _model_not_found(name) from None
    await runtime.chat.catalog.refresh()
    async with runtime.engine.connect() as conn:
        model = await queries.get_llm(conn, name)
    assert model is not None
    return LlmOut(**_llm_fields(model))


@post("/llms/{name:str}/activate", guards=GUARDS, status_code=200, tags=["catalog"])
async def activate_llm_route(request: Request[Any, Any, Any], name: FromPath[str]) -> LlmOut:
    """Serve a model again (it appears in /v1/models). Admin only."""
    return await _set_active(request, name, True)


@post("/llms/{name:str}/deactivate", guards=GUARDS, status_code=200, tags=["catalog"])
async def deactivate_llm_route(request: Request[Any, Any, Any], name: FromPath[str]) -> LlmOut:
    """Stop serving a model (requests for it get 404 model_not_found); its history stays. Admin only."""
    return await _set_active(request, name, False)


ROUTES: list[Any] = [
    list_llms_route,
    get_llm_route,
    set_price_route,
    activate_llm_route,
    deactivate_llm_route,
]
