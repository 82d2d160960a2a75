"""Server-rendered SVG charts: a column chart per time series, no JavaScript, exact values on hover.

Pure: points in, escaped SVG markup out. Bars carry a `<title>` (the browser's tooltip) with the period
and the exact figure; the axis shows a rounded maximum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 8, 12, 26


@dataclass(frozen=True, slots=True)
class Point:
    label: str  # the x-axis label (e.g. "11-28" or "14:00")
    value: float
    hover: str  # tooltip: the period and the exact figure


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above `value` (a readable axis maximum)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)


def column_chart(
    points: Sequence[Point], *, label: str, axis_format: Callable[[float], str], css_class: str = "bars"
) -> Markup:
    """A column chart of `points` (oldest first) as inline SVG with an accessible name."""
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    top = nice_ceiling(max((p.value for p in points), default=0.0))
    parts = [
        f'<svg class="chart {escape(css_class)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(label)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = PAD_TOP + inner_h * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(axis_format(top * fraction))}</text>"
        )
    n = len(points)
    if n:
        slot = inner_w / n
        bar = max(1.0, slot * 0.72)
        every = max(1, -(-n // 8))  # at most ~8 x labels
        for i, p in enumerate(points):
            h = 0.0 if top == 0 else inner_h * (p.value / top)
            x = PAD_LEFT + i * slot + (slot - bar) / 2
            y = PAD_TOP + inner_h - h
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{max(h, 0.0):.1f}">'
                f"<title>{escape(p.hover)}</title></rect>"
            )
            if i % every == 0:
                parts.append(
                    f'<text class="axis" x="{PAD_LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - 8}" '
                    f'text-anchor="middle">{escape(p.label)}</text>'
                )
    parts.append("</svg>")
    return Markup("".join(parts))
