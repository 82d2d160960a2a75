"""The community price map (LiteLLM's `model_prices_and_context_window.json` format) as typed prices.

Pure: text in, `PriceSpec`s and a dry-run diff against the catalog out. Numbers are read as `Decimal` from
the JSON text (never through float), and per-token USD costs become USD per 1M tokens exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pricing.catalog import Model, PriceTier, Pricing
from pricing.money import TOKENS_PER_PRICE_UNIT

# LiteLLM provider name -> SynapGate provider name. Others (bedrock, vertex_ai-*, azure, ...) are not
# served by the gateway and are reported as unsupported.
PROVIDERS: Mapping[str, str] = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "xai": "xai",
    "deepseek": "deepseek",
    "groq": "groq",
    "together_ai": "together",
    "openrouter": "openrouter",
}

# LiteLLM's long-context tiers are priced above 200k prompt tokens.
LONG_CONTEXT_THRESHOLD = 200_000

Mode = Literal["chat", "embedding"]


class PriceMapError(ValueError):
    """The price map is not in the expected format (the message names the entry and field)."""


@dataclass(frozen=True, slots=True)
class PriceSpec:
    """One model of the price map: its prices in USD per 1M tokens, limits and capabilities."""

    key: str  # the price map's key, e.g. "gemini/gemini-2.5-pro"
    model: str  # the model name without the provider prefix
    litellm_provider: str
    provider: str | None  # SynapGate's provider name; None when the gateway does not serve it
    mode: Mode
    pricing: Pricing
    max_input_tokens: int | None
    max_output_tokens: int | None
    supports_vision: bool
    supports_function_calling: bool


def _per_million(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise PriceMapError(f"{where}: expected a number, got {value!r}")
    rate = Decimal(value) * TOKENS_PER_PRICE_UNIT
    if rate < 0:
        raise PriceMapError(f"{where}: a price cannot be negative")
    # Exact: a per-token cost has finitely many decimals, and so has the product. Normalizing only drops
    # trailing zeros ("2.500000" -> "2.5"); integral rates keep a plain exponent (no "1E+1").
    normal = rate.normalize()
    exponent = normal.as_tuple().exponent
    return normal.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normal


def _limit(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PriceMapError(f"{where}: expected an integer, got {value!r}")


def _spec(key: str, entry: Mapping[str, Any]) -> PriceSpec | None:
    mode = entry.get("mode")
    if mode not in ("chat", "embedding"):
        return None  # image generation, audio, moderation, rerank...: not metered per token here
    litellm_provider = entry.get("litellm_provider")
    if not isinstance(litellm_provider, str):
        raise PriceMapError(f"{key}.litellm_provider: missing")
    input_rate = _per_million(entry.get("input_cost_per_token"), f"{key}.input_cost_per_token")
    output_rate = _per_million(entry.get("output_cost_per_token"), f"{key}.output_cost_per_token")
    if input_rate is None:
        return None  # a model without per-token prices (free tier entries, per-request pricing)
    if output_rate is None:
        output_rate = Decimal(0)  # embeddings have no output
    base = PriceTier(
        input=input_rate,
        output=output_rate,
        cached_input=_per_million(
            entry.get("cache_read_input_token_cost"), f"{key}.cache_read_input_token_cost"
        ),
        cache_write=_per_million(
            entry.get("cache_creation_input_token_cost"), f"{key}.cache_creation_input_token_cost"
        ),
    )
    long_input = _per_million(
        entry.get("input_cost_per_token_above_200k_tokens"), f"{key}.input_cost_per_token_above_200k_tokens"
    )
    long_output = _per_million(
        entry.get("output_cost_per_token_above_200k_tokens"), f"{key}.output_cost_per_token_above_200k_tokens"
    )
    long_tier = None
    if long_input is not None or long_output is not None:
        long_tier = PriceTier(
            input=long_input if long_input is not None else base.input,
            output=long_output if long_output is not None else base.output,
            cached_input=_per_million(
                entry.get("cache_read_input_token_cost_above_200k_tokens"),
                f"{key}.cache_read_input_token_cost_above_200k_tokens",
            ),
            cache_write=_per_million(
                entry.get("cache_creation_input_token_cost_above_200k_tokens"),
                f"{key}.cache_creation_input_token_cost_above_200k_tokens",
            ),
        )
    pricing = Pricing(
        base=base,
        long_context_threshold=LONG_CONTEXT_THRESHOLD if long_tier is not None else None,
        long_context=long_tier,
    )
    prefix = litellm_provider + "/"
    model = key[len(prefix) :] if key.startswith(prefix) else key
    return PriceSpec(
        key=key,
        model=model,
        litellm_provider=litellm_provider,
        provider=PROVIDERS.get(litellm_provider),
        mode=mode,
        pricing=pricing,
        max_input_tokens=_limit(entry.get("max_input_tokens"), f"{key}.max_input_tokens"),
        max_output_tokens=_limit(entry.get("max_output_tokens"), f"{key}.max_output_tokens"),
        supports_vision=entry.get("supports_vision") is True,
        supports_function_calling=entry.get("supports_function_calling") is True,
    )


def parse_price_map(text: str | bytes) -> list[PriceSpec]:
    """Every chat and embedding model of a price map with per-token prices, in file order.

    JSON numbers are parsed as Decimal (floats and integers alike), so `2.5e-06` is exactly 2.5 USD/1M.
    The map's `sample_spec` documentation entry, and modes other than chat/embedding, are skipped.
    """
    try:
        data = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError as exc:
        raise PriceMapError(f"the price map is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PriceMapError("the price map must be a JSON object of model name -> entry")
    specs: list[PriceSpec] = []
    for key, entry in data.items():
        if key == "sample_spec":
            continue
        if not isinstance(entry, dict):
            raise PriceMapError(f"{key}: expected an object")
        spec = _spec(key, entry)
        if spec is not None:
            specs.append(spec)
    return specs


ChangeKind = Literal["new", "price_change", "unchanged", "unsupported_provider"]


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One price that differs: which (e.g. `input`, `long_context.output`), the catalog's and the map's."""

    field: str
    current: Decimal | int | None
    proposed: Decimal | int | None


@dataclass(frozen=True, slots=True)
class PriceDiff:
    """What an import would do for one price-map model."""

    kind: ChangeKind
    spec: PriceSpec
    model: Model | None  # the catalog model it matched
    changes: tuple[FieldChange, ...] = ()


def _tier_fields(prefix: str, tier: PriceTier | None) -> dict[str, Decimal | None]:
    if tier is None:
        return {f"{prefix}{name}": None for name in ("input", "output", "cached_input", "cache_write")}
    return {
        f"{prefix}input": tier.input,
        f"{prefix}output": tier.output,
        f"{prefix}cached_input": tier.cached_input,
        f"{prefix}cache_write": tier.cache_write,
    }


def _price_fields(pricing: Pricing) -> dict[str, Decimal | int | None]:
    fields: dict[str, Decimal | int | None] = {}
    fields.update(_tier_fields("", pricing.base))
    fields["long_context_threshold"] = pricing.long_context_threshold
    fields.update(_tier_fields("long_context.", pricing.long_context))
    return fields


def price_changes(current: Pricing, proposed: Pricing) -> tuple[FieldChange, ...]:
    """The prices that differ (compared as numbers: 2.5 == 2.50)."""
    old, new = _price_fields(current), _price_fields(proposed)
    return tuple(FieldChange(name, old[name], new[name]) for name in old if old[name] != new[name])


def diff_price_map(specs: Iterable[PriceSpec], models: Iterable[Model]) -> list[PriceDiff]:
    """A dry run: for each price-map model, whether importing it would add a model, change prices, or not.

    A spec matches a catalog model of the same provider whose `upstream_model` or `name` is the spec's
    model name. Specs of providers the gateway does not serve are `unsupported_provider`.
    """
    by_key: dict[tuple[str, str], Model] = {}
    for model in models:
        by_key.setdefault((model.provider, model.upstream_model), model)
        by_key.setdefault((model.provider, model.name), model)
    out: list[PriceDiff] = []
    for spec in specs:
        if spec.provider is None:
            out.append(PriceDiff("unsupported_provider", spec, None))
            continue
        match = by_key.get((spec.provider, spec.model))
        if match is None:
            out.append(PriceDiff("new", spec, None))
            continue
        changes = price_changes(match.pricing, spec.pricing)
        out.append(PriceDiff("price_change" if changes else "unchanged", spec, match, changes))
    return out
