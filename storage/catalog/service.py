"""The catalog's rules: what a price is, and price versions that keep the prices a change leaves unset.

Prices are exact decimals of USD per 1M tokens that the NUMERIC(18, 9) columns hold without rounding.
A change names the prices it sets: an optional price it leaves out (`KEEP`) keeps its current value; one it
sets to None is cleared (then billed at the input price). The long-context tier needs its threshold and its
input and output prices together.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from config import PROVIDERS
from pricing.price_map import PriceMapError, PriceSpec, diff_price_map, parse_price_map
from storage.catalog import repository
from storage.catalog.repository import LlmInfo, PriceVersionInfo
from storage.errors import Conflict, InvalidInput, InvalidPrice, ModelNotFound

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


def _resolved(current: Any | None, change: PriceChange) -> dict[str, Any]:
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


# -- new models and aliases ------------------------------------------------------------------------

MAX_NAME = 100  # llms.name
MAX_ALIAS = 200  # llm_aliases.alias, llms.upstream_model, llms.display_name


class ModelExists(Conflict):
    code = "model_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"a model named {name!r} is in the catalog already", param="name")


class AliasTaken(Conflict):
    code = "alias_taken"

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(
            f"already the name or an alias of a catalog model: {', '.join(sorted(names))}", param="aliases"
        )


class UnknownProvider(InvalidInput):
    code = "unknown_provider"

    def __init__(self, provider: str) -> None:
        super().__init__(f"no provider {provider!r}; one of: {', '.join(PROVIDERS)}", param="provider")


@dataclass(frozen=True, slots=True)
class NewModel:
    """A model to add to the catalog: where it is served, what it is called, its prices (USD per 1M
    tokens; a missing cached/cache-write price bills at input) and its limits and capabilities."""

    name: str
    provider: str
    upstream_model: str
    input_price: Decimal
    output_price: Decimal
    context_window: int
    max_output_tokens: int
    display_name: str | None = None
    aliases: tuple[str, ...] = ()
    cached_input_price: Decimal | None = None
    cache_write_price: Decimal | None = None
    long_context_threshold: int | None = None
    long_input_price: Decimal | None = None
    long_cached_input_price: Decimal | None = None
    long_cache_write_price: Decimal | None = None
    long_output_price: Decimal | None = None
    supports_vision: bool = False
    supports_tools: bool = True
    supports_streaming: bool = True


def _identifier(value: str, param: str, limit: int) -> str:
    text = value.strip()
    if not text or len(text) > limit or any(c.isspace() for c in text):
        raise InvalidInput(f"{param} must be 1 to {limit} characters without spaces: {value!r}", param=param)
    return text


def _new_model_values(new: NewModel) -> tuple[dict[str, Any], list[str]]:
    if new.provider not in PROVIDERS:
        raise UnknownProvider(new.provider)
    name = _identifier(new.name, "name", MAX_NAME)
    upstream = _identifier(new.upstream_model, "upstream_model", MAX_ALIAS)
    display = (new.display_name or name).strip()
    if not display or len(display) > MAX_ALIAS:
        raise InvalidInput(f"display_name must be 1 to {MAX_ALIAS} characters", param="display_name")
    for param, value in (
        ("context_window", new.context_window),
        ("max_output_tokens", new.max_output_tokens),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInput(f"{param} must be a whole number of tokens, 1 or more", param=param)
    if new.max_output_tokens > new.context_window:
        raise InvalidInput("max_output_tokens cannot exceed context_window", param="max_output_tokens")
    alias_names = list(dict.fromkeys(_identifier(a, "aliases", MAX_ALIAS) for a in new.aliases))
    if name in alias_names:
        raise InvalidInput("a model's alias cannot be its own name", param="aliases")
    # Every price is given (None: none), so the rules of a price change apply with nothing kept.
    prices = _resolved(None, PriceChange(**{f.name: getattr(new, f.name) for f in fields(PriceChange)}))
    values = {
        "name": name,
        "provider": new.provider,
        "upstream_model": upstream,
        "display_name": display,
        "context_window": new.context_window,
        "max_output_tokens": new.max_output_tokens,
        "supports_vision": new.supports_vision,
        "supports_tools": new.supports_tools,
        "supports_streaming": new.supports_streaming,
        **prices,
    }
    return values, alias_names


async def add_model(conn: AsyncConnection, new: NewModel) -> LlmInfo:
    """Add a model (price version 1) with its aliases; a name or alias already in use is refused."""
    values, alias_names = _new_model_values(new)
    taken = await repository.taken_names(conn, [values["name"], *alias_names])
    if values["name"] in taken:
        raise ModelExists(values["name"])
    if taken:
        raise AliasTaken(sorted(taken))
    await repository.insert_model(conn, values, alias_names)
    model = await repository.get_llm(conn, values["name"])
    assert model is not None
    return model


async def add_aliases(conn: AsyncConnection, name: str, alias_names: Sequence[str]) -> LlmInfo:
    """Make more names resolve to the model `name` (e.g. a provider's dated id)."""
    current = await repository.lock_model(conn, name)
    wanted = list(dict.fromkeys(_identifier(a, "aliases", MAX_ALIAS) for a in alias_names))
    if not wanted:
        raise InvalidInput("name at least one alias", param="aliases")
    taken = await repository.taken_names(conn, wanted)
    if taken:
        raise AliasTaken(sorted(taken))
    await repository.insert_aliases(conn, int(current.id), wanted)
    model = await repository.get_llm(conn, name)
    assert model is not None
    return model


# -- the community price map -----------------------------------------------------------------------

ImportAction = Literal["add", "reprice", "unchanged", "skip"]


class InvalidPriceMap(InvalidInput):
    code = "invalid_price_map"


@dataclass(frozen=True, slots=True)
class PriceFieldChange:
    """One price an import changes (`long_context.output`, ...): the catalog's and the map's, as text."""

    field: str
    current: str | None
    proposed: str | None


@dataclass(frozen=True, slots=True)
class ImportEntry:
    """What an import does (or, in a dry run, would do) with one price-map model, and why."""

    key: str
    model: str
    provider: str | None
    action: ImportAction
    reason: str | None = None
    catalog_name: str | None = None
    changes: tuple[PriceFieldChange, ...] = ()
    price_version: int | None = None  # the version recorded (None in a dry run or when nothing changed)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """A price-map import: the diff first (every entry), then what was recorded unless `dry_run`."""

    dry_run: bool
    added: int
    repriced: int
    unchanged: int
    skipped: int
    entries: tuple[ImportEntry, ...]


def _text(value: Decimal | int | None) -> str | None:
    if value is None:
        return None
    return str(value) if isinstance(value, int) else format(value.normalize(), "f")


def _spec_prices(spec: PriceSpec) -> dict[str, Any]:
    base, long = spec.pricing.base, spec.pricing.long_context
    return {
        "input_price": base.input,
        "output_price": base.output,
        "cached_input_price": base.cached_input,
        "cache_write_price": base.cache_write,
        "long_context_threshold": spec.pricing.long_context_threshold,
        "long_input_price": long.input if long else None,
        "long_cached_input_price": long.cached_input if long else None,
        "long_cache_write_price": long.cache_write if long else None,
        "long_output_price": long.output if long else None,
    }


async def import_price_map(conn: AsyncConnection, text: str | bytes, *, dry_run: bool) -> ImportReport:
    """Import LiteLLM's price map: new chat models are added, changed prices become new price versions
    (charged usage keeps the version it was charged at), the rest is reported. One transaction: the
    caller's. A dry run computes the same report and writes nothing.
    """
    try:
        specs = parse_price_map(text)
    except PriceMapError as exc:
        raise InvalidPriceMap(str(exc), param="file") from None
    catalog = await repository.load_catalog(conn)
    entries: list[ImportEntry] = []
    claimed: set[str] = set()  # names added by this import (a map may list a model under two keys)
    for diff in diff_price_map(specs, catalog.all()):
        spec = diff.spec
        changes = tuple(PriceFieldChange(c.field, _text(c.current), _text(c.proposed)) for c in diff.changes)
        if diff.kind == "unsupported_provider":
            reason = f"provider {spec.litellm_provider!r} is not served by SynapGate"
            entries.append(_entry(spec, "skip", reason=reason))
        elif diff.kind == "unchanged":
            assert diff.model is not None
            entries.append(_entry(spec, "unchanged", catalog_name=diff.model.name))
        elif diff.kind == "price_change":
            assert diff.model is not None
            version = None
            if not dry_run:
                version = await set_price(conn, diff.model.name, PriceChange(**_spec_prices(spec)))
            name = diff.model.name
            entries.append(_entry(spec, "reprice", catalog_name=name, changes=changes, price_version=version))
        else:
            entries.append(await _import_new(conn, spec, claimed, dry_run=dry_run))
    count = {a: sum(1 for e in entries if e.action == a) for a in ("add", "reprice", "unchanged", "skip")}
    return ImportReport(
        dry_run=dry_run,
        added=count["add"],
        repriced=count["reprice"],
        unchanged=count["unchanged"],
        skipped=count["skip"],
        entries=tuple(entries),
    )


def _entry(
    spec: PriceSpec,
    action: ImportAction,
    *,
    reason: str | None = None,
    catalog_name: str | None = None,
    changes: tuple[PriceFieldChange, ...] = (),
    price_version: int | None = None,
) -> ImportEntry:
    return ImportEntry(
        spec.key, spec.model, spec.provider, action, reason, catalog_name, changes, price_version
    )


async def _import_new(
    conn: AsyncConnection, spec: PriceSpec, claimed: set[str], *, dry_run: bool
) -> ImportEntry:
    """A price-map model the catalog lacks: added as a chat model named as the map names it."""
    if spec.mode != "chat":
        # The catalog has no kind column yet: an embedding model would be offered for chat.
        return _entry(spec, "skip", reason=f"{spec.mode} models are not imported")
    if spec.max_input_tokens is None or spec.max_output_tokens is None:
        return _entry(spec, "skip", reason="the map gives no max_input_tokens / max_output_tokens")
    if spec.model in claimed or await repository.taken_names(conn, [spec.model]):
        return _entry(spec, "skip", reason=f"the name {spec.model!r} is taken by another catalog model")
    claimed.add(spec.model)
    assert spec.provider is not None
    new = NewModel(
        name=spec.model,
        provider=spec.provider,
        upstream_model=spec.model,
        context_window=spec.max_input_tokens,
        max_output_tokens=min(spec.max_output_tokens, spec.max_input_tokens),
        supports_vision=spec.supports_vision,
        supports_tools=spec.supports_function_calling,
        **_spec_prices(spec),
    )
    changes = tuple(
        PriceFieldChange(name, None, _text(value))
        for name, value in _spec_prices(spec).items()
        if value is not None
    )
    if dry_run:
        _new_model_values(new)  # the same checks, without writing
        return _entry(spec, "add", catalog_name=spec.model, changes=changes)
    await add_model(conn, new)
    return _entry(spec, "add", catalog_name=spec.model, changes=changes, price_version=1)
