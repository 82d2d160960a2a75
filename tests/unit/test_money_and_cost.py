"""Exact money: round_to_nano, parse_usd, format_usd, and price_usage / reservation_nano by hand.

Every expected value below is computed by hand from the seeded list prices (USD per 1M tokens), so a
wrong rate, a wrong tier or a float anywhere shows up as a different integer of nano-USD.
"""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest

from pricing.catalog import Model, PriceTier, Pricing
from pricing.cost import Cost, Usage, price_usage, reservation_nano
from pricing.money import MoneyError, format_usd, nano_to_usd, parse_usd, round_to_nano

D = Decimal


def tier(inp: str, cached: str | None, write: str | None, out: str) -> PriceTier:
    return PriceTier(
        input=D(inp),
        output=D(out),
        cached_input=None if cached is None else D(cached),
        cache_write=None if write is None else D(write),
    )


def model(
    name: str,
    base: PriceTier,
    *,
    long: PriceTier | None = None,
    threshold: int | None = None,
    provider: str = "openai",
    context_window: int = 128_000,
    max_output_tokens: int = 4_096,
) -> Model:
    return Model(
        id=abs(hash(name)) % 10_000,
        name=name,
        provider=provider,
        upstream_model=name,
        display_name=name,
        pricing=Pricing(base=base, long_context_threshold=threshold, long_context=long),
        price_version=1,
        context_window=context_window,
        max_output_tokens=max_output_tokens,
    )


# The seeded catalog, written out by hand (not read from the migration), USD per 1M tokens.
GPT_4O = model("gpt-4o", tier("2.50", "1.25", None, "10.00"), max_output_tokens=16_384)
GPT_4O_MINI = model("gpt-4o-mini", tier("0.15", "0.075", None, "0.60"), max_output_tokens=16_384)
GPT_4_TURBO = model("gpt-4-turbo", tier("10.00", None, None, "30.00"))
GPT_35 = model("gpt-3.5-turbo", tier("0.50", None, None, "1.50"), context_window=16_385)
CLAUDE_OPUS = model("claude-3-opus", tier("15.00", "1.50", "18.75", "75.00"), provider="anthropic")
CLAUDE_SONNET = model("claude-3-sonnet", tier("3.00", "0.30", "3.75", "15.00"), provider="anthropic")
CLAUDE_HAIKU = model("claude-3-haiku", tier("0.25", "0.03", "0.30", "1.25"), provider="anthropic")
GEMINI_PRO = model(
    "gemini-1.5-pro",
    tier("1.25", "0.3125", None, "5.00"),
    long=tier("2.50", "0.625", None, "10.00"),
    threshold=128_000,
    provider="gemini",
    context_window=2_097_152,
    max_output_tokens=8_192,
)
GEMINI_FLASH = model(
    "gemini-1.5-flash",
    tier("0.075", "0.01875", None, "0.30"),
    long=tier("0.15", "0.0375", None, "0.60"),
    threshold=128_000,
    provider="gemini",
    context_window=1_048_576,
    max_output_tokens=8_192,
)
GROK_2 = model("grok-2", tier("2.00", None, None, "10.00"), provider="xai", context_window=131_072)
DEEPSEEK = model("deepseek-chat", tier("0.28", "0.028", None, "0.42"), provider="deepseek")
LLAMA_405B = model("llama-3.1-405b", tier("3.50", None, None, "3.50"), provider="together")

SEEDED = [
    GPT_4O,
    GPT_4O_MINI,
    GPT_4_TURBO,
    GPT_35,
    CLAUDE_OPUS,
    CLAUDE_SONNET,
    CLAUDE_HAIKU,
    GEMINI_PRO,
    GEMINI_FLASH,
    GROK_2,
    DEEPSEEK,
    LLAMA_405B,
]


# -- round_to_nano -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usd", "expected"),
    [
        ("0", 0),
        ("1", 1_000_000_000),
        ("0.000000001", 1),
        ("0.0000000005", 0),  # 0.5 nano: half to even → 0
        ("0.0000000015", 2),  # 1.5 → 2
        ("0.0000000025", 2),  # 2.5 → 2
        ("0.0000000035", 4),  # 3.5 → 4
        ("0.00000000250000000001", 3),  # just above the half
        ("0.0000000024999999999", 2),  # just below the half
        ("1.23456789049", 1_234_567_890),
        ("-0.0000000015", -2),
        ("-0.0000000025", -2),
        ("123456789.123456789", 123_456_789_123_456_789),
    ],
)
def test_round_to_nano_is_half_even(usd: str, expected: int) -> None:
    result = round_to_nano(D(usd))
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("usd", "expected"),
    [
        ("0", 0),
        ("0.000000001", 1),  # exact stays exact
        ("0.0000000000000001", 1),  # any fraction of a nano goes up
        ("0.0000000005", 1),
        ("0.0000000015", 2),
        ("0.0000000020000001", 3),
        ("1.0000000000000001", 1_000_000_001),
        ("-0.0000000015", -1),  # upward (towards +inf), not away from zero
    ],
)
def test_round_to_nano_upward(usd: str, expected: int) -> None:
    result = round_to_nano(D(usd), up=True)
    assert result == expected
    assert type(result) is int


# -- parse_usd / format_usd ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", 10_000_000_000),
        ("0.000000001", 1),
        ("10.50", 10_500_000_000),
        ("0.1", 100_000_000),
        ("1e3", 1_000_000_000_000),
        ("1E-9", 1),
        ("-2.5", -2_500_000_000),  # parse_usd takes signs; callers decide whether negatives are allowed
        ("0", 0),
        (D("10"), 10_000_000_000),
        (D("0.3125"), 312_500_000),
        (D("1.000000000"), 1_000_000_000),
        (7, 7_000_000_000),
    ],
)
def test_parse_usd_accepts_exact_amounts(value: object, expected: int) -> None:
    result = parse_usd(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    [
        1.5,  # a float
        0.1,
        10.0,
        True,  # bool is an int subclass: refused all the same
        False,
        None,
        b"10",
        "abc",
        "",
        "1.2.3",
        "1,50",
        "$10",
        "NaN",
        "nan",
        "sNaN",
        "Infinity",
        "-Infinity",
        "inf",
        D("NaN"),
        D("Infinity"),
        "0.0000000001",  # finer than one nano-USD
        "1.0000000001",
        "1e-10",
        D("0.0000000005"),
    ],
)
def test_parse_usd_refuses_inexact_or_junk(value: object) -> None:
    with pytest.raises(MoneyError):
        parse_usd(value)


def test_money_error_is_a_value_error_with_one_line() -> None:
    with pytest.raises(ValueError) as info:
        parse_usd("0.0000000001")
    assert "\n" not in str(info.value)
    assert "0.0000000001" in str(info.value)


@pytest.mark.parametrize(
    ("nano", "expected"),
    [
        (0, "0.000000000"),
        (1, "0.000000001"),
        (1234, "0.000001234"),
        (1_000_000_000, "1.000000000"),
        (10_500_000_000, "10.500000000"),
        (-1, "-0.000000001"),
        (-1_500_000_000, "-1.500000000"),
        (-999_999_999, "-0.999999999"),
        (123_456_789_012_345_678, "123456789.012345678"),
        (2**63 - 1, "9223372036.854775807"),  # the largest BIGINT
        (-(2**63), "-9223372036.854775808"),
    ],
)
def test_format_usd(nano: int, expected: str) -> None:
    assert format_usd(nano) == expected


def test_format_and_parse_round_trip_and_nano_to_usd() -> None:
    rng = random.Random(20261124)
    for _ in range(2000):
        nano = rng.randint(-(2**63), 2**63 - 1)
        text = format_usd(nano)
        assert parse_usd(text) == nano
        usd = nano_to_usd(nano)
        assert isinstance(usd, Decimal)
        assert usd == D(text)
        assert round_to_nano(usd) == nano
    assert nano_to_usd(1) == D("0.000000001")
    assert nano_to_usd(-2_500_000_000) == D("-2.5")


# -- price_usage ---------------------------------------------------------------------------------


def assert_exact_cost(cost: Cost) -> None:
    for field in ("input_usd", "cached_input_usd", "cache_write_usd", "output_usd"):
        assert type(getattr(cost, field)) is Decimal, field
    assert type(cost.total_nano) is int
    assert type(cost.long_context) is bool


def test_plain_usage_gpt_4o() -> None:
    cost = price_usage(Usage(prompt_tokens=1000, completion_tokens=500), GPT_4O)
    # 1000 × 2.50 / 1M = 0.0025; 500 × 10.00 / 1M = 0.005
    assert cost.input_usd == D("0.0025")
    assert cost.cached_input_usd == 0
    assert cost.cache_write_usd == 0
    assert cost.output_usd == D("0.005")
    assert cost.total_usd == D("0.0075")
    assert cost.total_nano == 7_500_000
    assert cost.long_context is False
    assert_exact_cost(cost)


@pytest.mark.parametrize(
    ("m", "prompt", "completion", "expected_nano"),
    [
        (GPT_4O_MINI, 1_000_000, 1_000_000, 750_000_000),  # 0.15 + 0.60
        (GPT_4_TURBO, 1234, 567, 29_350_000),  # 0.01234 + 0.01701
        (GPT_35, 16_000, 385, 8_577_500),  # 0.008 + 0.0005775
        (CLAUDE_OPUS, 3, 7, 570_000),  # 0.000045 + 0.000525
        (CLAUDE_HAIKU, 1, 1, 1_500),  # 250 + 1250 nano
        (GROK_2, 131_072, 32_768, 589_824_000),  # 0.262144 + 0.32768
        (DEEPSEEK, 999, 1, 280_140),  # 0.00027972 + 0.00000042
        (LLAMA_405B, 100, 100, 700_000),  # 0.00035 + 0.00035
    ],
)
def test_plain_usage_other_models(m: Model, prompt: int, completion: int, expected_nano: int) -> None:
    cost = price_usage(Usage(prompt_tokens=prompt, completion_tokens=completion), m)
    assert cost.total_nano == expected_nano
    assert_exact_cost(cost)


def test_cached_input_gpt_4o_bills_at_1_25() -> None:
    usage = Usage(prompt_tokens=10_000, completion_tokens=200, cached_tokens=4_000)
    cost = price_usage(usage, GPT_4O)
    assert cost.input_usd == D("0.015")  # 6000 uncached × 2.50 / 1M
    assert cost.cached_input_usd == D("0.005")  # 4000 × 1.25 / 1M
    assert cost.cache_write_usd == 0
    assert cost.output_usd == D("0.002")  # 200 × 10 / 1M
    assert cost.total_nano == 22_000_000


def test_cached_input_without_a_cached_price_bills_at_input() -> None:
    usage = Usage(prompt_tokens=1_000, completion_tokens=0, cached_tokens=400)
    cost = price_usage(usage, GPT_4_TURBO)
    assert cost.input_usd == D("0.006")
    assert cost.cached_input_usd == D("0.004")
    assert cost.total_nano == 10_000_000


def test_anthropic_cache_write_and_read_claude_3_sonnet() -> None:
    # prompt 5000 = 2000 plain + 1000 read from the cache + 2000 written to it
    usage = Usage(prompt_tokens=5_000, completion_tokens=300, cached_tokens=1_000, cache_write_tokens=2_000)
    cost = price_usage(usage, CLAUDE_SONNET)
    assert usage.uncached_prompt_tokens == 2_000
    assert cost.input_usd == D("0.006")  # 2000 × 3.00
    assert cost.cached_input_usd == D("0.0003")  # 1000 × 0.30
    assert cost.cache_write_usd == D("0.0075")  # 2000 × 3.75
    assert cost.output_usd == D("0.0045")  # 300 × 15.00
    assert cost.total_nano == 18_300_000
    assert_exact_cost(cost)


def test_anthropic_cache_write_only() -> None:
    cost = price_usage(Usage(prompt_tokens=1_000_000, cache_write_tokens=1_000_000), CLAUDE_SONNET)
    assert cost.input_usd == 0
    assert cost.cache_write_usd == D("3.75")
    assert cost.total_nano == 3_750_000_000
    cost = price_usage(Usage(prompt_tokens=1_000_000, cached_tokens=1_000_000), CLAUDE_SONNET)
    assert cost.cached_input_usd == D("0.30")
    assert cost.total_nano == 300_000_000


def test_cached_and_written_tokens_never_bill_below_zero_plain_tokens() -> None:
    usage = Usage(prompt_tokens=10, cached_tokens=8, cache_write_tokens=8)
    assert usage.uncached_prompt_tokens == 0
    cost = price_usage(usage, CLAUDE_SONNET)
    assert cost.input_usd == 0
    assert cost.total_nano == 8 * 300 + 8 * 3750


@pytest.mark.parametrize(
    ("prompt", "long", "expected_nano"),
    [
        # 128000 × 1.25 = 0.16; 1000 × 5.00 = 0.005
        (128_000, False, 165_000_000),
        # 128001 × 2.50 = 0.3200025; 1000 × 10.00 = 0.01
        (128_001, True, 330_002_500),
        (127_999, False, 164_998_750),
        (2_000_000, True, 5_010_000_000),
    ],
)
def test_gemini_pro_long_context_tier_starts_above_128000(
    prompt: int, long: bool, expected_nano: int
) -> None:
    cost = price_usage(Usage(prompt_tokens=prompt, completion_tokens=1_000), GEMINI_PRO)
    assert cost.long_context is long
    assert cost.total_nano == expected_nano


def test_gemini_flash_long_context_tier() -> None:
    base = price_usage(Usage(prompt_tokens=128_000, completion_tokens=100), GEMINI_FLASH)
    assert base.long_context is False
    assert base.total_nano == 9_630_000  # 128000 × 0.075 = 0.0096; 100 × 0.30 = 0.00003
    long = price_usage(Usage(prompt_tokens=128_001, completion_tokens=100), GEMINI_FLASH)
    assert long.long_context is True
    assert long.total_nano == 19_260_150  # 128001 × 0.15 = 0.01920015; 100 × 0.60 = 0.00006


def test_gemini_long_tier_counts_cached_tokens_in_the_prompt_and_uses_long_cached_price() -> None:
    usage = Usage(prompt_tokens=200_000, completion_tokens=0, cached_tokens=100_000)
    cost = price_usage(usage, GEMINI_PRO)
    assert cost.long_context is True
    assert cost.input_usd == D("0.25")  # 100000 × 2.50
    assert cost.cached_input_usd == D("0.0625")  # 100000 × 0.625
    assert cost.total_nano == 312_500_000
    # the tier is chosen by all prompt tokens, cached included
    cost = price_usage(Usage(prompt_tokens=128_001, cached_tokens=128_001), GEMINI_PRO)
    assert cost.long_context is True
    assert cost.cached_input_usd == D("0.080000625")  # 128001 × 0.625 / 1M


def test_reasoning_tokens_are_inside_completion_tokens_not_added() -> None:
    plain = price_usage(Usage(prompt_tokens=100, completion_tokens=1_000), GPT_4O_MINI)
    reasoning = price_usage(
        Usage(prompt_tokens=100, completion_tokens=1_000, reasoning_tokens=800), GPT_4O_MINI
    )
    # 100 × 0.15 = 0.000015; 1000 × 0.60 = 0.0006 (800 of those are reasoning: billed as output, once)
    assert reasoning.output_usd == D("0.0006")
    assert reasoning.total_nano == 615_000
    assert reasoning == plain


def test_fractional_nano_rounds_half_even_once_on_the_total() -> None:
    # Gemini Flash cached input: 0.01875 / 1M = 18.75 nano per token
    cost = price_usage(Usage(prompt_tokens=2, cached_tokens=2), GEMINI_FLASH)
    assert cost.cached_input_usd == D("0.0000000375")  # 37.5 nano
    assert cost.total_nano == 38  # half to even
    cost = price_usage(Usage(prompt_tokens=6, cached_tokens=6), GEMINI_FLASH)
    assert cost.total_nano == 112  # 112.5 → 112
    # Two half-nano parts: rounded once the total is exactly 1; rounded per part it would be 0.
    half = model("half-nano", tier("0.0005", None, None, "0.0005"))
    cost = price_usage(Usage(prompt_tokens=1, completion_tokens=1), half)
    assert cost.input_usd == D("0.0000000005")
    assert cost.output_usd == D("0.0000000005")
    assert cost.total_nano == 1


def test_zero_usage_costs_nothing() -> None:
    for m in SEEDED:
        cost = price_usage(Usage(), m)
        assert cost.total_nano == 0
        assert cost.total_usd == 0


# -- reservation_nano ----------------------------------------------------------------------------


def test_reservation_uses_the_higher_of_input_and_cache_write_rates() -> None:
    # claude-3-sonnet: max(3.00, 3.75) = 3.75 → 1000 × 3.75 = 0.00375; 100 × 15 = 0.0015
    assert reservation_nano(CLAUDE_SONNET, 1_000, 100) == 5_250_000
    # claude-3-opus: 18.75 → 0.01875 + 100 × 75 = 0.0075
    assert reservation_nano(CLAUDE_OPUS, 1_000, 100) == 26_250_000
    # gpt-4o has no cache-write price: input 2.50 → 0.0025 + 100 × 10 = 0.001
    assert reservation_nano(GPT_4O, 1_000, 100) == 3_500_000
    # a cache write cheaper than input never lowers the reservation
    cheap_write = model("cheap-write", tier("2.00", "0.10", "1.00", "4.00"))
    assert reservation_nano(cheap_write, 1_000_000, 0) == 2_000_000_000


def test_reservation_rounds_up() -> None:
    tenth = model("tenth-nano", tier("0.0001", None, None, "0.0001"))  # 0.1 nano per token
    assert reservation_nano(tenth, 1, 0) == 1
    assert reservation_nano(tenth, 0, 11) == 2
    assert reservation_nano(tenth, 10, 0) == 1
    assert reservation_nano(tenth, 0, 0) == 0
    # Gemini Flash: 3 × 75 + 1 × 300 = 525 exactly; 1 cached-rate token is never assumed
    assert reservation_nano(GEMINI_FLASH, 3, 1) == 525


def test_reservation_uses_the_long_tier_above_the_threshold() -> None:
    assert reservation_nano(GEMINI_PRO, 128_000, 8_192) == 200_960_000  # 0.16 + 0.04096
    assert reservation_nano(GEMINI_PRO, 128_001, 8_192) == 401_922_500  # 0.3200025 + 0.08192


# -- property: many random usages, checked against an independent exact computation ----------------


def _rate(value: Decimal | None, default: Decimal) -> Fraction:
    return Fraction(default if value is None else value)


def _half_even(x: Fraction) -> int:
    floor = x.numerator // x.denominator
    rest = x - floor
    if rest > Fraction(1, 2):
        return floor + 1
    if rest < Fraction(1, 2):
        return floor
    return floor if floor % 2 == 0 else floor + 1


def _ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def test_random_usages_total_is_the_exact_sum_rounded_once() -> None:
    rng = random.Random(1124)
    for i in range(3000):
        m = rng.choice(SEEDED)
        prompt = rng.choice([0, 1, 2, 7, 127_999, 128_000, 128_001, rng.randint(0, 3_000_000)])
        prompt = max(prompt, rng.randint(0, 200))
        cached = rng.randint(0, prompt)
        write = rng.randint(0, prompt - cached) if m.provider == "anthropic" else 0
        completion = rng.randint(0, 100_000)
        reasoning = rng.randint(0, completion)
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cache_write_tokens=write,
            reasoning_tokens=reasoning,
        )
        cost = price_usage(usage, m)
        assert_exact_cost(cost)

        t = m.pricing.long_context if m.pricing.long_context and prompt > 128_000 else m.pricing.base
        assert cost.long_context is (t is not m.pricing.base)
        per = Fraction(1_000_000)
        exact_usd = (
            (prompt - cached - write) * Fraction(t.input)
            + cached * _rate(t.cached_input, t.input)
            + write * _rate(t.cache_write, t.input)
            + completion * Fraction(t.output)
        ) / per
        assert Fraction(cost.total_usd) == exact_usd, (i, m.name, usage)
        assert cost.total_nano == _half_even(exact_usd * 1_000_000_000), (i, m.name, usage)

        # the reservation for the same prompt and output bound is never below the actual cost
        worst_rate = max(Fraction(t.input), _rate(t.cache_write, t.input))
        worst = (prompt * worst_rate + completion * Fraction(t.output)) / per
        reserved = reservation_nano(m, prompt, completion)
        assert type(reserved) is int
        assert reserved == _ceil(worst * 1_000_000_000), (i, m.name, usage)
        assert reserved >= cost.total_nano
