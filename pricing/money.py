"""Exact money: rates are Decimal USD per 1M tokens, amounts are integer nano-USD (1e-9 USD).

`round_to_nano` is the one place a Decimal cost becomes an integer amount; nothing in SynapGate
rounds money anywhere else, and no float ever carries money.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation

NANO_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # catalog prices are USD per 1M tokens
_NANO = Decimal(NANO_PER_USD)
MAX_NANO = 2**63 - 1  # amounts live in BIGINT columns


class MoneyError(ValueError):
    """A money amount that cannot be taken exactly (not a number, or finer than a nano-USD)."""


def round_to_nano(usd: Decimal, *, up: bool = False) -> int:
    """Round a USD Decimal to integer nano-USD: half-even for charges, or upward for reservations."""
    scaled = usd * _NANO
    return int(scaled.to_integral_value(rounding=ROUND_CEILING if up else ROUND_HALF_EVEN))


def parse_usd(text: object) -> int:
    """An exact USD amount (decimal string, int or Decimal) as nano-USD.

    Floats, junk and amounts finer than one nano-USD are refused rather than rounded: money that comes
    in must be taken exactly or not at all.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | Decimal):
        raise MoneyError(f"USD amounts must be decimal strings, not {type(text).__name__}")
    try:
        value = text if isinstance(text, Decimal) else Decimal(text)
    except InvalidOperation:
        raise MoneyError(f"not a decimal USD amount: {text!r}") from None
    if not value.is_finite():
        raise MoneyError(f"not a finite USD amount: {text!r}")
    scaled = value * _NANO
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{text!r} is finer than one nano-USD (at most 9 decimal places)")
    if abs(scaled) > MAX_NANO:
        raise MoneyError(f"{text!r} is larger than the ledger can hold (9,223,372,036 USD)")
    return int(scaled)


def nano_to_usd(nano: int) -> Decimal:
    """Integer nano-USD as an exact Decimal of USD."""
    return Decimal(nano).scaleb(-9)


def format_usd(nano: int) -> str:
    """Integer nano-USD as a plain decimal string with nine places, e.g. 1234 → '0.000001234'."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), NANO_PER_USD)
    return f"{sign}{whole}.{frac:09d}"
