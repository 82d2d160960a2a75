"""Seed the catalog with the twelve models of the SynapScale plan at their list prices.

Prices are USD per 1M tokens, as exact decimal strings: input / cached input / cache write / output,
and for Gemini 1.5 the tier above 128k prompt tokens. A model without a cached or cache-write price bills
those tokens at its input price. The data is frozen here: later price changes are new price versions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

from migrations import frozen_types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRICE_COLUMNS = (
    "input_price",
    "cached_input_price",
    "cache_write_price",
    "output_price",
    "long_context_threshold",
    "long_input_price",
    "long_cached_input_price",
    "long_cache_write_price",
    "long_output_price",
)

# name, provider, upstream model, display name, base prices, long tier (threshold, prices) or None,
# context window, max output, vision
_Prices = tuple[str, str | None, str | None, str]
_MODELS: list[tuple[str, str, str, str, _Prices, tuple | None, int, int, bool]] = [
    ("gpt-4o", "openai", "gpt-4o", "GPT-4o", ("2.50", "1.25", None, "10.00"), None, 128_000, 16_384, True),
    ("gpt-4o-mini", "openai", "gpt-4o-mini", "GPT-4o mini", ("0.15", "0.075", None, "0.60"), None,
     128_000, 16_384, True),
    ("gpt-4-turbo", "openai", "gpt-4-turbo", "GPT-4 Turbo", ("10.00", None, None, "30.00"), None,
     128_000, 4_096, True),
    ("gpt-3.5-turbo", "openai", "gpt-3.5-turbo", "GPT-3.5 Turbo", ("0.50", None, None, "1.50"), None,
     16_385, 4_096, False),
    ("claude-3-opus", "anthropic", "claude-3-opus-20240229", "Claude 3 Opus",
     ("15.00", "1.50", "18.75", "75.00"), None, 200_000, 4_096, True),
    ("claude-3-sonnet", "anthropic", "claude-3-sonnet-20240229", "Claude 3 Sonnet",
     ("3.00", "0.30", "3.75", "15.00"), None, 200_000, 4_096, True),
    ("claude-3-haiku", "anthropic", "claude-3-haiku-20240307", "Claude 3 Haiku",
     ("0.25", "0.03", "0.30", "1.25"), None, 200_000, 4_096, True),
    ("gemini-1.5-pro", "gemini", "gemini-1.5-pro", "Gemini 1.5 Pro", ("1.25", "0.3125", None, "5.00"),
     (128_000, ("2.50", "0.625", None, "10.00")), 2_097_152, 8_192, True),
    ("gemini-1.5-flash", "gemini", "gemini-1.5-flash", "Gemini 1.5 Flash", ("0.075", "0.01875", None, "0.30"),
     (128_000, ("0.15", "0.0375", None, "0.60")), 1_048_576, 8_192, True),
    ("grok-2", "xai", "grok-2", "Grok 2", ("2.00", None, None, "10.00"), None, 131_072, 32_768, False),
    ("deepseek-chat", "deepseek", "deepseek-chat", "DeepSeek Chat", ("0.28", "0.028", None, "0.42"), None,
     128_000, 8_192, False),
    ("llama-3.1-405b", "together", "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo",
     "Llama 3.1 405B Instruct Turbo",
     ("3.50", None, None, "3.50"), None, 128_000, 4_096, False),
]  # fmt: skip


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _prices(base: tuple[str, str | None, str | None, str], long: tuple | None) -> dict[str, object]:
    threshold, long_prices = long if long else (None, (None, None, None, None))
    values = [*map(_dec, base), threshold, *map(_dec, long_prices)]
    return dict(zip(_PRICE_COLUMNS, values, strict=True))


def _rate(name: str) -> sa.Column:
    return sa.column(name, frozen_types.ExactDecimal(18, 9))


def upgrade() -> None:
    now = datetime.now(UTC)
    llms = sa.table(
        "llms",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("provider", sa.String),
        sa.column("upstream_model", sa.String),
        sa.column("display_name", sa.String),
        *(_rate(c) if c.endswith("_price") else sa.column(c, sa.Integer) for c in _PRICE_COLUMNS),
        sa.column("context_window", sa.Integer),
        sa.column("max_output_tokens", sa.Integer),
        sa.column("supports_vision", sa.Boolean),
        sa.column("price_version", sa.Integer),
        sa.column("created_at", frozen_types.UTCDateTime()),
        sa.column("updated_at", frozen_types.UTCDateTime()),
    )
    versions = sa.table(
        "llm_price_versions",
        sa.column("llm_id", sa.Integer),
        sa.column("version", sa.Integer),
        *(_rate(c) if c.endswith("_price") else sa.column(c, sa.Integer) for c in _PRICE_COLUMNS),
        sa.column("effective_from", frozen_types.UTCDateTime()),
    )
    rows = []
    for model_id, (name, provider, upstream, display, base, long, ctx, max_out, vision) in enumerate(
        _MODELS, 1
    ):
        rows.append(
            {
                "id": model_id,
                "name": name,
                "provider": provider,
                "upstream_model": upstream,
                "display_name": display,
                **_prices(base, long),
                "context_window": ctx,
                "max_output_tokens": max_out,
                "supports_vision": vision,
                "price_version": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
    op.bulk_insert(llms, rows)
    op.bulk_insert(
        versions,
        [
            {"llm_id": r["id"], "version": 1, **{c: r[c] for c in _PRICE_COLUMNS}, "effective_from": now}
            for r in rows
        ],
    )
    if op.get_bind().dialect.name == "postgresql":
        # Explicit ids were inserted; move the sequence past them so later inserts do not collide.
        op.execute("SELECT setval(pg_get_serial_sequence('llms', 'id'), (SELECT max(id) FROM llms))")


def downgrade() -> None:
    names = [m[0] for m in _MODELS]
    llms = sa.table("llms", sa.column("id", sa.Integer), sa.column("name", sa.String))
    ids = sa.select(llms.c.id).where(llms.c.name.in_(names))
    op.execute(
        sa.text(
            "DELETE FROM llm_price_versions WHERE llm_id IN (SELECT id FROM llms WHERE name IN :n)"
        ).bindparams(sa.bindparam("n", names, expanding=True))
    )
    op.execute(llms.delete().where(llms.c.id.in_(ids)))
