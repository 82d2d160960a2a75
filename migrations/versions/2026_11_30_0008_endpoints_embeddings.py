"""Endpoints and embedding models: `usage_logs.endpoint` and `llms.kind`, and three embedding models.

- `usage_logs.endpoint` (chat | messages | responses | embeddings): which API the request came in on, so
  spend on `/v1/messages`, `/v1/responses` and `/v1/embeddings` is told apart from chat completions.
- `llms.kind` (chat | embedding): a chat route refuses an embedding model and the embeddings route a chat one.
- Seeded embedding models (USD per 1M input tokens; embeddings have no output tokens):
  `text-embedding-3-small` 0.02 and `text-embedding-3-large` 0.13 (OpenAI, https://openai.com/api/pricing/),
  `gemini-embedding-001` 0.15 (Google, https://ai.google.dev/gemini-api/docs/pricing, paid tier, as of
  2025-11).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

from migrations import frozen_types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name, provider, upstream model, display name, input price, context window
_EMBEDDING_MODELS = [
    ("text-embedding-3-small", "openai", "text-embedding-3-small", "Text Embedding 3 Small", "0.02", 8_191),
    ("text-embedding-3-large", "openai", "text-embedding-3-large", "Text Embedding 3 Large", "0.13", 8_191),
    ("gemini-embedding-001", "gemini", "gemini-embedding-001", "Gemini Embedding 001", "0.15", 2_048),
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # 0003's streamed backfill leaves its server-side cursor over usage_logs open until the end of the
        # (single) migration transaction, and PostgreSQL refuses to ALTER a table an open cursor reads.
        op.execute("CLOSE ALL")
    # A plain ADD COLUMN with its CHECK on both dialects: SQLite's batch mode would rebuild the table with its
    # constraints in an arbitrary order (and SQLite accepts a CHECK on an added column).
    op.execute(
        "ALTER TABLE usage_logs ADD COLUMN endpoint VARCHAR(16) DEFAULT 'chat' NOT NULL "
        "CONSTRAINT ck_usage_logs_endpoint "
        "CHECK (endpoint IN ('chat', 'messages', 'responses', 'embeddings'))"
    )
    op.execute(
        "ALTER TABLE llms ADD COLUMN kind VARCHAR(16) DEFAULT 'chat' NOT NULL "
        "CONSTRAINT ck_llms_kind CHECK (kind IN ('chat', 'embedding'))"
    )

    now = datetime.now(UTC)
    rate = frozen_types.ExactDecimal(18, 9)
    llms = sa.table(
        "llms",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("provider", sa.String),
        sa.column("upstream_model", sa.String),
        sa.column("display_name", sa.String),
        sa.column("input_price", rate),
        sa.column("output_price", rate),
        sa.column("context_window", sa.Integer),
        sa.column("max_output_tokens", sa.Integer),
        sa.column("supports_vision", sa.Boolean),
        sa.column("supports_tools", sa.Boolean),
        sa.column("supports_streaming", sa.Boolean),
        sa.column("kind", sa.String),
        sa.column("price_version", sa.Integer),
        sa.column("created_at", frozen_types.UTCDateTime()),
        sa.column("updated_at", frozen_types.UTCDateTime()),
    )
    versions = sa.table(
        "llm_price_versions",
        sa.column("llm_id", sa.Integer),
        sa.column("version", sa.Integer),
        sa.column("input_price", rate),
        sa.column("output_price", rate),
        sa.column("effective_from", frozen_types.UTCDateTime()),
    )
    conn = op.get_bind()
    for name, provider, upstream, display, price, context in _EMBEDDING_MODELS:
        conn.execute(
            llms.insert().values(
                name=name,
                provider=provider,
                upstream_model=upstream,
                display_name=display,
                input_price=Decimal(price),
                output_price=Decimal(0),
                context_window=context,
                max_output_tokens=0,
                supports_vision=False,
                supports_tools=False,
                supports_streaming=False,
                kind="embedding",
                price_version=1,
                created_at=now,
                updated_at=now,
            )
        )
        llm_id = conn.execute(sa.select(llms.c.id).where(llms.c.name == name)).scalar_one()
        conn.execute(
            versions.insert().values(
                llm_id=llm_id,
                version=1,
                input_price=Decimal(price),
                output_price=Decimal(0),
                effective_from=now,
            )
        )


def downgrade() -> None:
    names = [m[0] for m in _EMBEDDING_MODELS]
    op.execute(
        sa.text(
            "DELETE FROM llm_price_versions WHERE llm_id IN (SELECT id FROM llms WHERE name IN :n)"
        ).bindparams(sa.bindparam("n", names, expanding=True))
    )
    op.execute(
        sa.text("DELETE FROM llms WHERE name IN :n").bindparams(sa.bindparam("n", names, expanding=True))
    )
    op.execute("ALTER TABLE llms DROP COLUMN kind")  # its CHECK goes with it
    op.execute("ALTER TABLE usage_logs DROP COLUMN endpoint")
