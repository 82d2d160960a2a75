"""The LiteLLM price-map importer: exact Decimal prices per 1M tokens, tiers, limits, and the dry-run diff."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from pricing.catalog import Model, PriceTier, Pricing
from pricing.price_map import PriceMapError, PriceSpec, diff_price_map, parse_price_map

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "litellm_prices.json"


@pytest.fixture(scope="module")
def specs() -> dict[str, PriceSpec]:
    return {s.key: s for s in parse_price_map(FIXTURE.read_text())}


def model(name: str, provider: str, pricing: Pricing, upstream: str | None = None) -> Model:
    return Model(
        id=1,
        name=name,
        provider=provider,
        upstream_model=upstream or name,
        display_name=name,
        pricing=pricing,
        price_version=1,
        context_window=128000,
        max_output_tokens=16384,
    )


def test_prices_are_exact_decimals_per_million_tokens(specs: dict[str, PriceSpec]) -> None:
    gpt = specs["gpt-4o"]
    assert gpt.pricing.base == PriceTier(
        input=Decimal("2.5"), output=Decimal("10"), cached_input=Decimal("1.25"), cache_write=None
    )
    mini = specs["gpt-4o-mini"].pricing.base
    # Through float, 1.5e-07 * 1e6 is 0.15000000000000002; through Decimal it is 0.15 exactly.
    assert (mini.input, mini.output, mini.cached_input) == (Decimal("0.15"), Decimal("0.6"), Decimal("0.075"))
    assert str(mini.input) == "0.15" and str(gpt.pricing.base.output) == "10"
    assert all(isinstance(v, Decimal) for v in (mini.input, mini.output, mini.cached_input))
    gem = specs["gemini/gemini-2.5-pro"].pricing.base
    assert gem.cached_input == Decimal("0.3125")


def test_long_context_tiers_limits_modes_and_providers(specs: dict[str, PriceSpec]) -> None:
    claude = specs["claude-sonnet-4-5"]
    assert claude.pricing.long_context_threshold == 200_000
    assert claude.pricing.long_context == PriceTier(
        input=Decimal("6"), output=Decimal("22.5"), cached_input=Decimal("0.6"), cache_write=Decimal("7.5")
    )
    assert claude.pricing.base.cache_write == Decimal("3.75")
    assert claude.pricing.tier_for(200_001) is claude.pricing.long_context
    gem = specs["gemini/gemini-2.5-pro"]
    assert (gem.model, gem.provider, gem.max_input_tokens, gem.max_output_tokens) == (
        "gemini-2.5-pro",
        "gemini",
        1048576,
        65535,
    )
    assert gem.pricing.long_context.cached_input is None
    emb = specs["text-embedding-3-small"]
    assert (emb.mode, emb.pricing.base.output, emb.max_output_tokens) == ("embedding", Decimal(0), None)
    assert specs["gpt-4o"].supports_vision and specs["gpt-4o"].supports_function_calling
    assert not specs["deepseek/deepseek-chat"].supports_vision
    assert specs["bedrock/anthropic.claude-3-haiku-20240307-v1:0"].provider is None
    # sample_spec and the image model are not per-token models.
    assert "sample_spec" not in specs and "dall-e-3" not in specs and len(specs) == 7


def test_dry_run_diff_against_the_catalog(specs: dict[str, PriceSpec]) -> None:
    parsed = parse_price_map(FIXTURE.read_text())
    gpt = next(s for s in parsed if s.key == "gpt-4o")
    mini = next(s for s in parsed if s.key == "gpt-4o-mini")
    catalog = [
        # same prices written differently (2.50 == 2.5): unchanged
        model(
            "gpt-4o", "openai", Pricing(base=PriceTier(Decimal("2.50"), Decimal("10.000"), Decimal("1.25")))
        ),
        # a changed output price and no cached price
        model(
            "mini", "openai", Pricing(base=PriceTier(Decimal("0.15"), Decimal("0.5"))), upstream="gpt-4o-mini"
        ),
        # matched by upstream_model under the gateway provider name
        model(
            "gemini-pro",
            "gemini",
            replace(next(s for s in parsed if s.model == "gemini-2.5-pro").pricing),
            upstream="gemini-2.5-pro",
        ),
    ]
    diff = {d.spec.key: d for d in diff_price_map(parsed, catalog)}
    assert diff["gpt-4o"].kind == "unchanged" and diff["gpt-4o"].model is catalog[0]
    changed = diff["gpt-4o-mini"]
    assert changed.kind == "price_change" and changed.model is catalog[1]
    assert {(c.field, c.current, c.proposed) for c in changed.changes} == {
        ("output", Decimal("0.5"), Decimal("0.6")),
        ("cached_input", None, Decimal("0.075")),
    }
    assert diff["gemini/gemini-2.5-pro"].kind == "unchanged"
    assert diff["claude-sonnet-4-5"].kind == "new" and diff["deepseek/deepseek-chat"].kind == "new"
    assert diff["bedrock/anthropic.claude-3-haiku-20240307-v1:0"].kind == "unsupported_provider"
    assert gpt.pricing == catalog[0].pricing and mini.provider == "openai"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "JSON object"),
        ("{", "not valid JSON"),
        (
            '{"m": {"mode": "chat", "litellm_provider": "openai", "input_cost_per_token": "1e-6"}}',
            "m.input_cost",
        ),
        ('{"m": {"mode": "chat", "input_cost_per_token": 1e-6}}', "m.litellm_provider"),
        ('{"m": {"mode": "chat", "litellm_provider": "openai", "input_cost_per_token": -1e-6}}', "negative"),
        (
            '{"m": {"mode": "chat", "litellm_provider": "openai", "input_cost_per_token": 1e-6,'
            ' "max_input_tokens": 1.5}}',
            "m.max_input_tokens",
        ),
    ],
)
def test_malformed_price_maps_are_refused_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(PriceMapError, match=message):
        parse_price_map(text)


def test_json_numbers_never_pass_through_float() -> None:
    text = json.dumps({"m": {"mode": "chat", "litellm_provider": "openai"}})[:-2]
    text += ', "input_cost_per_token": 1.23456789012345678901e-7, "output_cost_per_token": 3e-7}}'
    (spec,) = parse_price_map(text)
    assert spec.pricing.base.input == Decimal("0.123456789012345678901")
