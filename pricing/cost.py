"""Usage × prices → cost, exact: Decimal all the way, rounded once to integer nano-USD."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pricing.catalog import Model, PriceTier
from pricing.money import TOKENS_PER_PRICE_UNIT, round_to_nano

UsageSource = Literal["provider", "estimated"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one completion in SynapGate's canonical form.

    `prompt_tokens` counts every input token, cached reads and cache writes included (OpenAI's meaning;
    adapters of providers that count otherwise convert). `completion_tokens` counts every billable output
    token, reasoning included. The detail fields are parts of those totals, never additions.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    source: UsageSource = "provider"
    estimator: str | None = None  # how an estimate was made, e.g. "tiktoken:o200k_base" or "bytes/4"

    @property
    def uncached_prompt_tokens(self) -> int:
        return max(self.prompt_tokens - self.cached_tokens - self.cache_write_tokens, 0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Cost:
    """A priced usage: each part exact in USD, and the total rounded once to nano-USD."""

    input_usd: Decimal
    cached_input_usd: Decimal
    cache_write_usd: Decimal
    output_usd: Decimal
    long_context: bool
    total_nano: int

    @property
    def total_usd(self) -> Decimal:
        return self.input_usd + self.cached_input_usd + self.cache_write_usd + self.output_usd


def _exact_parts(usage: Usage, tier: PriceTier) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    per = Decimal(TOKENS_PER_PRICE_UNIT)
    return (
        usage.uncached_prompt_tokens * tier.input / per,
        usage.cached_tokens * tier.cached_input_rate / per,
        usage.cache_write_tokens * tier.cache_write_rate / per,
        usage.completion_tokens * tier.output / per,
    )


def price_usage(usage: Usage, model: Model) -> Cost:
    """The exact cost of `usage` at `model`'s prices (long-context tier when the prompt is above it)."""
    tier = model.pricing.tier_for(usage.prompt_tokens)
    inp, cached, write, out = _exact_parts(usage, tier)
    return Cost(
        input_usd=inp,
        cached_input_usd=cached,
        cache_write_usd=write,
        output_usd=out,
        long_context=tier is not model.pricing.base,
        total_nano=round_to_nano(inp + cached + write + out),
    )


def reservation_nano(model: Model, prompt_tokens: int, max_output_tokens: int) -> int:
    """The worst case a request can cost: all input uncached, every allowed output token, rounded up."""
    tier = model.pricing.tier_for(prompt_tokens)
    worst = Usage(prompt_tokens=prompt_tokens, completion_tokens=max_output_tokens)
    # The worst input rate: a cache write may cost more per token than a plain input token.
    rate = max(tier.input, tier.cache_write_rate)
    per = Decimal(TOKENS_PER_PRICE_UNIT)
    worst_usd = worst.prompt_tokens * rate / per + worst.completion_tokens * tier.output / per
    return round_to_nano(worst_usd, up=True)


def byok_fee_nano(per_request_usd: Decimal, rate: Decimal, cost_usd: Decimal, *, up: bool = False) -> int:
    """What a call on the user's own key is debited: a flat fee plus a fraction of its metered cost.

    `up` rounds up (for reservations, which must cover the fee); the charge itself rounds half-even.
    """
    return round_to_nano(per_request_usd + rate * cost_usd, up=up)
