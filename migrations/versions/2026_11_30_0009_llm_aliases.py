"""Model aliases: other names a catalog model answers to (Claude Code sends dated ids, e.g.
`claude-sonnet-4-5-20250929`).

`llm_aliases` maps an alias to one model; the catalog cache resolves a request's model by name, then by
alias. An alias is unique and never equal to a model's name (the service checks that). The seeded Claude
models answer to their dated upstream ids.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from migrations import frozen_types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The seeded Claude models (revision 0002) and the dated ids Anthropic and its clients call them by.
_SEED_ALIASES = {
    "claude-3-opus": "claude-3-opus-20240229",
    "claude-3-sonnet": "claude-3-sonnet-20240229",
    "claude-3-haiku": "claude-3-haiku-20240307",
}


def upgrade() -> None:
    op.create_table(
        "llm_aliases",
        sa.Column("alias", sa.String(length=200), nullable=False),
        sa.Column("llm_id", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["llm_id"], ["llms.id"], name=op.f("fk_llm_aliases_llm_id_llms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("alias", name=op.f("pk_llm_aliases")),
    )
    with op.batch_alter_table("llm_aliases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_llm_aliases_llm_id"), ["llm_id"], unique=False)

    llms = sa.table("llms", sa.column("id", sa.Integer), sa.column("name", sa.String))
    aliases = sa.table(
        "llm_aliases",
        sa.column("alias", sa.String),
        sa.column("llm_id", sa.Integer),
        sa.column("created_at", frozen_types.UTCDateTime()),
    )
    bind = op.get_bind()
    ids = dict(
        bind.execute(sa.select(llms.c.name, llms.c.id).where(llms.c.name.in_(list(_SEED_ALIASES)))).all()
    )
    taken = set(
        bind.execute(sa.select(llms.c.name).where(llms.c.name.in_(list(_SEED_ALIASES.values())))).scalars()
    )
    now = datetime.now(UTC)
    rows = [
        {"alias": alias, "llm_id": ids[name], "created_at": now}
        for name, alias in _SEED_ALIASES.items()
        if name in ids and alias not in taken
    ]
    if rows:
        op.bulk_insert(aliases, rows)


def downgrade() -> None:
    op.drop_table("llm_aliases")
