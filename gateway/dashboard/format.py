"""How the dashboard shows numbers: currency rounded for the eye, the exact value kept for hover and tests."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from pricing.money import format_usd, nano_to_usd


def usd_display(nano: int) -> str:
    """A nano-USD amount as currency: cents from $1 up, else four significant digits ($0.001234)."""
    value = nano_to_usd(nano)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value == 0:
        return "$0.00"
    if value >= 1:
        return f"{sign}${value.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):,}"
    exponent = value.adjusted()  # -1 for 0.1…, -4 for 0.000123…
    places = min(9, max(2, 3 - exponent))
    shown = f"{value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN):f}"
    if exponent < -2:  # sub-cent amounts: drop trailing zeros of the 4 significant digits
        shown = shown.rstrip("0")
    return f"{sign}${shown}"


def usd_exact(nano: int) -> str:
    """The exact amount, for `title` and `data-value`: a decimal string with nine places."""
    return format_usd(nano)


def integer(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def compact(value: int | None) -> str:
    """A count for a headline card: 950, 12.3k, 4.56M (the exact count goes in `title`)."""
    if value is None:
        return "—"
    for limit, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:.3g}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return str(value)


def percent(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio * 100:.2f}%" if ratio < 0.1 else f"{ratio * 100:.1f}%"


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 10_000:
        return f"{value / 1000:,.1f} s"
    return f"{value:,.0f} ms"


def number(value: float | None, places: int = 1) -> str:
    return "—" if value is None else f"{value:,.{places}f}"


def ratio(numerator: int, denominator: int, places: int = 6) -> float | None:
    """The API's ratio: None over nothing, else rounded to `places` (gateway/api/admin/analytics.py)."""
    return None if denominator == 0 else round(numerator / denominator, places)


def when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_id(value: object) -> str:
    text = str(value)
    return text[:8] if len(text) > 12 else text


def rate(value: Decimal | None) -> str:
    """A catalog price (USD per 1M tokens) as the admin API writes it: plain decimal, no trailing zeros."""
    return "" if value is None else format(value.normalize(), "f")
