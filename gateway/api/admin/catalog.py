"""Admin API: the model catalog — list, show with price history, add a model and its aliases, set a new
price version, (de)activate, import LiteLLM's community price map.

Prices are exact decimal strings of USD per 1M tokens (never floats). A price change is a new price
version: usage already charged keeps naming the version (and the cost) it was charged at, and the
versions' rows are never rewritten. A PUT names the prices it sets: an omitted optional price keeps its
current value, an explicit null clears it (the rule is storage/catalog/service.py's, shared with the CLI).
Reading the catalog is open to any valid key; changing it needs the admin key. This worker's catalog cache
is refreshed at once, other workers' within seconds.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody, RawBody

from gateway.api.admin.common import Body, Struct
from gateway.api.admin.scope import AppRuntime, Caller, Engine, Paging
from pricing.money import TOKENS_PER_PRICE_UNIT
from storage.catalog import repository, service
from storage.catalog.repository import LlmInfo, Prices
from storage.catalog.service import KEEP, ImportReport, NewModel, PriceChange
from storage.views import to_dict

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
    aliases: list[str]


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


def _prices_out(p: Prices) -> PricesOut:
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


def _llm_fields(m: LlmInfo) -> dict[str, Any]:
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
        "aliases": list(m.aliases),
    }


# -- request shape -------------------------------------------------------------------------------

Rate = Annotated[str, msgspec.Meta(min_length=1, max_length=30, description='USD per 1M tokens, e.g. "2.50"')]
OptionalRate = Rate | None | msgspec.UnsetType


class SetPriceIn(Body):
    """The new prices (PUT): an omitted optional price keeps its current value; null clears it."""

    input_price: Rate
    output_price: Rate
    cached_input_price: OptionalRate = msgspec.UNSET
    cache_write_price: OptionalRate = msgspec.UNSET
    long_context_threshold: Annotated[int, msgspec.Meta(ge=1)] | msgspec.UnsetType | None = msgspec.UNSET
    long_input_price: OptionalRate = msgspec.UNSET
    long_cached_input_price: OptionalRate = msgspec.UNSET
    long_cache_write_price: OptionalRate = msgspec.UNSET
    long_output_price: OptionalRate = msgspec.UNSET


Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class NewLlmIn(Body):
    """A model to add (POST /llms): prices as exact decimal strings of USD per 1M tokens; a missing
    cached/cache-write price bills those tokens at `input_price`; aliases are other names it answers to."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    upstream_model: Name
    input_price: Rate
    output_price: Rate
    context_window: Annotated[int, msgspec.Meta(ge=1)]
    max_output_tokens: Annotated[int, msgspec.Meta(ge=1)]
    display_name: Name | None = None
    aliases: Annotated[list[Name], msgspec.Meta(max_length=100)] = msgspec.field(default_factory=list)
    cached_input_price: Rate | None = None
    cache_write_price: Rate | None = None
    long_context_threshold: Annotated[int, msgspec.Meta(ge=1)] | None = None
    long_input_price: Rate | None = None
    long_cached_input_price: Rate | None = None
    long_cache_write_price: Rate | None = None
    long_output_price: Rate | None = None
    supports_vision: bool = False
    supports_tools: bool = True
    supports_streaming: bool = True


class AliasesIn(Body):
    aliases: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=100)]


def _new_model(data: NewLlmIn) -> NewModel:
    values: dict[str, Any] = {}
    for name in NewLlmIn.__struct_fields__:
        value = getattr(data, name)
        values[name] = (
            service.parse_rate(value, name) if name.endswith("_price") and value is not None else value
        )
    values["aliases"] = tuple(data.aliases)
    return NewModel(**values)


def _price_change(data: SetPriceIn) -> PriceChange:
    values: dict[str, Any] = {}
    for name in SetPriceIn.__struct_fields__:
        value = getattr(data, name)
        if value is msgspec.UNSET:
            values[name] = KEEP
        elif isinstance(value, str):
            values[name] = service.parse_rate(value, name)
        else:
            values[name] = value
    return PriceChange(**values)


async def _detail(engine: Engine, name: str) -> LlmDetailOut:
    async with engine.connect() as conn:
        model, history = await service.model_with_history(conn, name)
    return LlmDetailOut(
        **_llm_fields(model),
        price_history=[
            PriceVersionOut(version=v.version, effective_from=v.effective_from, prices=_prices_out(v.prices))
            for v in history
        ],
    )


# -- routes --------------------------------------------------------------------------------------


async def _set_active(caller: Caller, runtime: AppRuntime, name: str, active: bool) -> LlmOut:
    caller.require_admin()
    async with runtime.engine.begin() as conn:
        model = await service.set_active(conn, name, active)
    await runtime.catalog.refresh()
    return LlmOut(**_llm_fields(model))


class CatalogController(Controller):
    """The model catalog and its price versions. (Guard and dependencies: on the admin router.)"""

    path = "/"
    tags = ("catalog",)

    @get("/llms")
    async def list_llms_route(
        self,
        engine: Engine,
        page: Paging,
        active: FromQuery[bool | None] = None,
        provider: FromQuery[str | None] = None,
    ) -> LlmPage:
        """The catalog by id, active and inactive models, with their current prices."""
        async with engine.connect() as conn:
            found = await repository.list_llms(conn, page, active=active, provider=provider)
        return LlmPage(
            data=[LlmOut(**_llm_fields(m)) for m in found.items],
            total=found.total,
            limit=found.limit,
            offset=found.offset,
            has_more=found.has_more,
        )

    @post("/llms", status_code=201)
    async def add_llm_route(
        self, caller: Caller, runtime: AppRuntime, data: JSONBody[NewLlmIn]
    ) -> LlmDetailOut:
        """Add a model with its prices (version 1), limits, capabilities and aliases. Admin only."""
        caller.require_admin()
        new = _new_model(data)
        async with runtime.engine.begin() as conn:
            await service.add_model(conn, new)
        await runtime.catalog.refresh()
        return await _detail(runtime.engine, new.name.strip())

    @post("/llms/import", status_code=200)
    async def import_llms_route(
        self, caller: Caller, runtime: AppRuntime, body: RawBody, dry_run: FromQuery[bool] = False
    ) -> dict[str, Any]:
        """Import LiteLLM's price map (the JSON body, `model_prices_and_context_window.json` format): new
        chat models are added and changed prices recorded as new price versions; `dry_run=true` answers
        the same report and changes nothing. Admin only."""
        caller.require_admin()
        async with runtime.engine.begin() as conn:
            report: ImportReport = await service.import_price_map(conn, body, dry_run=dry_run)
        if not dry_run:
            await runtime.catalog.refresh()
        out: dict[str, Any] = to_dict(report)
        return out

    @post("/llms/{name:str}/aliases", status_code=200)
    async def add_aliases_route(
        self, caller: Caller, runtime: AppRuntime, name: FromPath[str], data: JSONBody[AliasesIn]
    ) -> LlmOut:
        """Make more names (e.g. a provider's dated ids) resolve to this model. Admin only."""
        caller.require_admin()
        async with runtime.engine.begin() as conn:
            model = await service.add_aliases(conn, name, data.aliases)
        await runtime.catalog.refresh()
        return LlmOut(**_llm_fields(model))

    @get("/llms/{name:str}")
    async def get_llm_route(self, engine: Engine, name: FromPath[str]) -> LlmDetailOut:
        """One model with every price version it has had."""
        return await _detail(engine, name)

    @put("/llms/{name:str}")
    async def set_price_route(
        self, caller: Caller, runtime: AppRuntime, name: FromPath[str], data: JSONBody[SetPriceIn]
    ) -> LlmDetailOut:
        """Give a model a new price version; charged usage keeps its own. Admin only."""
        caller.require_admin()
        change = _price_change(data)
        async with runtime.engine.begin() as conn:
            await service.set_price(conn, name, change)
        await runtime.catalog.refresh()
        return await _detail(runtime.engine, name)

    @post("/llms/{name:str}/activate", status_code=200)
    async def activate_llm_route(self, caller: Caller, runtime: AppRuntime, name: FromPath[str]) -> LlmOut:
        """Serve a model again (it appears in /v1/models). Admin only."""
        return await _set_active(caller, runtime, name, True)

    @post("/llms/{name:str}/deactivate", status_code=200)
    async def deactivate_llm_route(self, caller: Caller, runtime: AppRuntime, name: FromPath[str]) -> LlmOut:
        """Stop serving a model (requests for it get 404 model_not_found); its history stays. Admin only."""
        return await _set_active(caller, runtime, name, False)
