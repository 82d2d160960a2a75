"""The migrated schema on PostgreSQL and on SQLite: tables, keys, rules, exact types, the seeded catalog,
idempotent and reversible migrations, no drift from the models, and price versions that never change.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from migrations.runner import alembic_config, downgrade, upgrade
from pricing.catalog import PriceTier
from storage.catalog.repository import load_catalog
from storage.catalog.service import PriceChange, set_price
from storage.db import create_engine
from storage.errors import ModelNotFound
from storage.models import (
    Base,
    BillingEvent,
    Conversation,
    LlmPriceVersion,
    Message,
    UsageLog,
    User,
    Workspace,
    table_of,
)
from storage.usage.partitions import is_partitioning_table
from tests.integration.conftest import off_loop

pytestmark = pytest.mark.integration

D = Decimal

DESIGN_TABLES = {
    "users",
    "workspaces",
    "workspace_members",
    "api_keys",
    "provider_credentials",
    "llms",
    "llm_price_versions",
    "conversations",
    "messages",
    "usage_logs",
    "billing_events",
    "invoices",
    "credit_accounts",
    "credit_reservations",
    "conversation_llms",
    "message_feedback",
    "tags",
}

MONEY_COLUMNS = {
    ("api_keys", "budget_nano"),
    ("usage_logs", "cost_nano"),
    ("usage_logs", "charged_nano"),
    ("invoices", "total_nano"),
    ("billing_events", "amount_nano"),
    ("credit_accounts", "balance_nano"),
    ("credit_accounts", "held_nano"),
    ("credit_reservations", "amount_nano"),
    ("conversation_llms", "cost_nano"),
}

PRICE_COLUMNS = (
    "input_price",
    "cached_input_price",
    "cache_write_price",
    "output_price",
    "long_input_price",
    "long_cached_input_price",
    "long_cache_write_price",
    "long_output_price",
)

# name: provider, upstream model, (input, cached input, cache write, output), long tier or None,
# context window, max output tokens. USD per 1M tokens, exactly as the plan lists them.
SEEDED: dict[str, tuple[str, str, tuple[str, str | None, str | None, str], Any, int, int]] = {
    "gpt-4o": ("openai", "gpt-4o", ("2.50", "1.25", None, "10.00"), None, 128_000, 16_384),
    "gpt-4o-mini": ("openai", "gpt-4o-mini", ("0.15", "0.075", None, "0.60"), None, 128_000, 16_384),
    "gpt-4-turbo": ("openai", "gpt-4-turbo", ("10", None, None, "30"), None, 128_000, 4_096),
    "gpt-3.5-turbo": ("openai", "gpt-3.5-turbo", ("0.50", None, None, "1.50"), None, 16_385, 4_096),
    "claude-3-opus": (
        "anthropic",
        "claude-3-opus-20240229",
        ("15", "1.50", "18.75", "75"),
        None,
        200_000,
        4_096,
    ),
    "claude-3-sonnet": (
        "anthropic",
        "claude-3-sonnet-20240229",
        ("3", "0.30", "3.75", "15"),
        None,
        200_000,
        4_096,
    ),
    "claude-3-haiku": (
        "anthropic",
        "claude-3-haiku-20240307",
        ("0.25", "0.03", "0.30", "1.25"),
        None,
        200_000,
        4_096,
    ),
    "gemini-1.5-pro": (
        "gemini",
        "gemini-1.5-pro",
        ("1.25", "0.3125", None, "5.00"),
        (128_000, ("2.50", "0.625", None, "10.00")),
        2_097_152,
        8_192,
    ),
    "gemini-1.5-flash": (
        "gemini",
        "gemini-1.5-flash",
        ("0.075", "0.01875", None, "0.30"),
        (128_000, ("0.15", "0.0375", None, "0.60")),
        1_048_576,
        8_192,
    ),
    "grok-2": ("xai", "grok-2", ("2", None, None, "10"), None, 131_072, 32_768),
    "deepseek-chat": ("deepseek", "deepseek-chat", ("0.28", "0.028", None, "0.42"), None, 128_000, 8_192),
    "llama-3.1-405b": (
        "together",
        "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo",
        ("3.50", None, None, "3.50"),
        None,
        128_000,
        4_096,
    ),
}


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    fixture = "pg_reset_database" if request.param == "postgresql" else "sqlite_database"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url, pool_size=2)
    try:
        yield eng
    finally:
        await eng.dispose()


def sqlite_path(url: str) -> str:
    database = make_url(url).database
    assert database
    return database


async def run(engine: AsyncEngine, fn: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.run_sync(fn)


def by_name(items: Any) -> list[Any]:
    return sorted(items, key=lambda i: str(i.get("name")))


def schema_dump(conn: Connection) -> dict[str, Any]:
    """Everything the schema is made of, in a comparable form (plus the seeded row counts)."""
    insp = sa.inspect(conn)
    dump: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        dump[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in insp.get_columns(table)
            ],
            "pk": insp.get_pk_constraint(table),
            "fks": by_name(insp.get_foreign_keys(table)),
            "indexes": by_name(insp.get_indexes(table)),
            "uniques": by_name(insp.get_unique_constraints(table)),
            "checks": by_name(insp.get_check_constraints(table)),
        }
    if conn.dialect.name == "sqlite":
        dump["sqlite_master"] = conn.execute(
            sa.text("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        ).all()
    else:
        dump["sequences"] = sorted(insp.get_sequence_names())
    if "alembic_version" in dump:
        dump["alembic_version_rows"] = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    if "llms" in dump:
        dump["llm_rows"] = conn.execute(sa.text("SELECT id, name, price_version FROM llms ORDER BY id")).all()
        dump["price_version_rows"] = conn.execute(
            sa.text("SELECT llm_id, version FROM llm_price_versions ORDER BY llm_id, version")
        ).all()
    return dump


# -- tables, keys, constraints -------------------------------------------------------------------


async def test_every_design_table_exists(engine: AsyncEngine) -> None:
    tables = set(await run(engine, lambda c: sa.inspect(c).get_table_names()))
    assert tables >= DESIGN_TABLES
    # and nothing the models do not know (later migrations may add tables, with their models), but
    # usage_logs' partitions and request-id gate on PostgreSQL (0015)
    partitioning = {t for t in tables if is_partitioning_table(t)}
    if engine.dialect.name == "postgresql":
        assert {"usage_request_ids", "usage_logs_default"} < partitioning
        assert len(partitioning) >= 2 + 4  # the current month and three ahead at least
    else:
        assert partitioning == set()
    assert tables - partitioning == set(Base.metadata.tables) | {"alembic_version"}
    version = await run(engine, lambda c: c.execute(sa.text("SELECT version_num FROM alembic_version")).all())
    assert [tuple(r) for r in version] == [(head_revision(),)]


async def test_foreign_keys_and_their_delete_rules(engine: AsyncEngine) -> None:
    def fks(conn: Connection) -> dict[tuple[str, str], tuple[str, str | None]]:
        insp = sa.inspect(conn)
        out = {}
        for table in DESIGN_TABLES:
            for fk in insp.get_foreign_keys(table):
                assert len(fk["constrained_columns"]) == 1
                ondelete = (fk.get("options") or {}).get("ondelete")
                out[(table, fk["constrained_columns"][0])] = (fk["referred_table"], ondelete)
        return out

    found = await run(engine, fks)
    assert found[("billing_events", "user_id")] == ("users", "RESTRICT")
    assert found[("usage_logs", "workspace_id")] == ("workspaces", "SET NULL")
    assert found[("messages", "conversation_id")] == ("conversations", "CASCADE")
    assert found[("usage_logs", "user_id")] == ("users", "RESTRICT")
    assert found[("usage_logs", "llm_id")] == ("llms", "RESTRICT")
    assert found[("credit_accounts", "user_id")] == ("users", "RESTRICT")
    assert found[("invoices", "user_id")] == ("users", "RESTRICT")
    assert found[("api_keys", "user_id")] == ("users", "CASCADE")
    assert found[("llm_price_versions", "llm_id")] == ("llms", "CASCADE")
    assert found[("conversation_llms", "llm_id")] == ("llms", "RESTRICT")
    assert found[("message_feedback", "message_id")] == ("messages", "CASCADE")
    # every foreign key says what happens on delete
    assert all(rule is not None for _table, rule in found.values()), found


async def test_unique_constraints(engine: AsyncEngine) -> None:
    def uniques(conn: Connection) -> set[tuple[str, tuple[str, ...]]]:
        insp = sa.inspect(conn)
        return {
            (table, tuple(u["column_names"]))
            for table in DESIGN_TABLES
            for u in insp.get_unique_constraints(table)
        }

    found = await run(engine, uniques)
    if engine.dialect.name == "postgresql":  # partitioned (0015): the gate's primary key is the request id's
        assert ("usage_logs", ("request_id", "created_at")) in found
        gate_key = await run(engine, lambda c: sa.inspect(c).get_pk_constraint("usage_request_ids"))
        assert gate_key["constrained_columns"] == ["request_id"]
    else:
        assert ("usage_logs", ("request_id",)) in found
    for expected in [
        ("billing_events", ("idempotency_key",)),
        ("api_keys", ("key_hash",)),
        ("users", ("email",)),
        ("llms", ("name",)),
        ("llm_price_versions", ("llm_id", "version")),
        ("provider_credentials", ("user_id", "provider")),
    ]:
        assert expected in found


async def _insert_user(engine: AsyncEngine) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(table_of(User).insert().values(id=user_id, email=f"{user_id.hex}@example.com"))
    return user_id


async def test_constraints_are_enforced(engine: AsyncEngine) -> None:
    events = table_of(BillingEvent)
    user_id = await _insert_user(engine)
    with pytest.raises(IntegrityError) as info:
        async with engine.begin() as conn:
            await conn.execute(
                events.insert().values(user_id=user_id, type="bogus", amount_nano=1, idempotency_key="k0")
            )
    assert "ck_billing_events_type" in str(info.value)
    with pytest.raises(IntegrityError) as info:
        async with engine.begin() as conn:
            await conn.execute(
                events.insert().values(
                    user_id=user_id, type="credit", status="maybe", amount_nano=1, idempotency_key="k0"
                )
            )
    assert "ck_billing_events_status" in str(info.value)

    async with engine.begin() as conn:
        await conn.execute(
            events.insert().values(user_id=user_id, type="credit", amount_nano=5, idempotency_key="k1")
        )
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                events.insert().values(user_id=user_id, type="credit", amount_nano=7, idempotency_key="k1")
            )
    with pytest.raises(IntegrityError):  # a ledger row needs a real user
        async with engine.begin() as conn:
            await conn.execute(
                events.insert().values(
                    user_id=uuid.uuid4(), type="credit", amount_nano=1, idempotency_key="k2"
                )
            )
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(events.c.idempotency_key, events.c.amount_nano))).all()
    assert [tuple(r) for r in rows] == [("k1", 5)]


async def test_delete_rules_behave(engine: AsyncEngine) -> None:
    users, workspaces = table_of(User), table_of(Workspace)
    events, logs = table_of(BillingEvent), table_of(UsageLog)
    conversations, messages = table_of(Conversation), table_of(Message)
    user_id, workspace_id, conversation_id, message_id = (uuid.uuid4() for _ in range(4))
    async with engine.begin() as conn:
        await conn.execute(users.insert().values(id=user_id, email="rules@example.com"))
        await conn.execute(workspaces.insert().values(id=workspace_id, name="w"))
        await conn.execute(
            events.insert().values(user_id=user_id, type="credit", amount_nano=10, idempotency_key="c1")
        )
        await conn.execute(
            logs.insert().values(
                request_id="req_1",
                user_id=user_id,
                workspace_id=workspace_id,
                provider="openai",
                model="gpt-4o",
            )
        )
        await conn.execute(conversations.insert().values(id=conversation_id, user_id=user_id))
        await conn.execute(
            messages.insert().values(
                id=message_id, conversation_id=conversation_id, user_id=user_id, request_id="req_1"
            )
        )
    # RESTRICT: a user with ledger history cannot be deleted
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(users.delete().where(users.c.id == user_id))
    # SET NULL: the usage row outlives its workspace
    async with engine.begin() as conn:
        await conn.execute(workspaces.delete().where(workspaces.c.id == workspace_id))
    # CASCADE: a conversation takes its messages with it
    async with engine.begin() as conn:
        await conn.execute(conversations.delete().where(conversations.c.id == conversation_id))
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(logs.c.workspace_id))).scalar_one() is None
        assert (await conn.execute(sa.select(sa.func.count()).select_from(messages))).scalar_one() == 0
        assert (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one() == 1
        assert (await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one() == 1


# -- exact types ---------------------------------------------------------------------------------


async def test_no_float_column_anywhere(engine: AsyncEngine) -> None:
    def columns(conn: Connection) -> list[tuple[str, str, Any]]:
        insp = sa.inspect(conn)
        return [(t, c["name"], c["type"]) for t in insp.get_table_names() for c in insp.get_columns(t)]

    found = await run(engine, columns)
    assert len(found) > 150
    floats = [(t, c, str(ty)) for t, c, ty in found if isinstance(ty, sa.Float)]
    assert floats == []
    for table, column, ty in found:
        name = str(ty).upper()
        assert not any(word in name for word in ("FLOAT", "REAL", "DOUBLE")), (table, column, name)

    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.text(
                        "SELECT table_name, column_name, data_type, numeric_precision, numeric_scale "
                        "FROM information_schema.columns WHERE table_schema = 'public'"
                    )
                )
            ).all()
        assert not [r for r in rows if r.data_type in ("real", "double precision")]
        types = {
            (r.table_name, r.column_name): (r.data_type, r.numeric_precision, r.numeric_scale) for r in rows
        }
        nano = {key for key in types if key[1].endswith("_nano")}
        assert nano >= MONEY_COLUMNS
        assert {key: types[key][0] for key in nano} == dict.fromkeys(nano, "bigint")
        for table in ("llms", "llm_price_versions"):
            for column in PRICE_COLUMNS:
                assert types[(table, column)] == ("numeric", 18, 9), (table, column)
        assert types[("tags", "confidence")] == ("numeric", 6, 5)
    else:
        with sqlite3.connect(sqlite_path(str(engine.url))) as raw:
            tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            declared = {
                (t, row[1]): row[2].upper()
                for t in tables
                for row in raw.execute(f'PRAGMA table_info("{t}")')
            }
        assert not [k for k, v in declared.items() if any(w in v for w in ("FLOA", "REAL", "DOUB"))]
        nano = {key for key in declared if key[1].endswith("_nano")}
        assert nano >= MONEY_COLUMNS
        for key in nano:
            assert declared[key] == "BIGINT", key
        for table in ("llms", "llm_price_versions"):
            for column in PRICE_COLUMNS:  # exact text, never SQLite's NUMERIC affinity (which makes floats)
                assert declared[(table, column)] == "VARCHAR(20)", (table, column)


async def test_seeded_models_read_back_as_exact_decimals(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        catalog = await load_catalog(conn)
    chat = [m for m in catalog.all() if m.kind == "chat"]
    assert len(chat) == 12
    assert sorted(m.name for m in chat) == sorted(SEEDED)
    assert [m.id for m in sorted(chat, key=lambda m: m.id)] == list(range(1, 13))
    embedding = {m.name: m for m in catalog.all() if m.kind == "embedding"}  # migration 0008
    assert sorted(embedding) == ["gemini-embedding-001", "text-embedding-3-large", "text-embedding-3-small"]
    assert embedding["text-embedding-3-small"].pricing.base.input == D("0.02")
    assert embedding["text-embedding-3-large"].pricing.base.input == D("0.13")
    assert embedding["gemini-embedding-001"].pricing.base.input == D("0.15")

    def tier_of(prices: tuple[str, str | None, str | None, str]) -> PriceTier:
        inp, cached, write, out = prices
        return PriceTier(
            input=D(inp),
            output=D(out),
            cached_input=None if cached is None else D(cached),
            cache_write=None if write is None else D(write),
        )

    for name, (provider, upstream, base, long, context_window, max_output) in SEEDED.items():
        m = catalog.get(name)
        assert m is not None, name
        assert (m.provider, m.upstream_model) == (provider, upstream)
        assert (m.context_window, m.max_output_tokens) == (context_window, max_output), name
        assert m.price_version == 1
        assert m.is_active is True
        assert m.pricing.base == tier_of(base), name
        for price in (m.pricing.base.input, m.pricing.base.output):
            assert type(price) is Decimal
        if long is None:
            assert m.pricing.long_context is None, name
            assert m.pricing.long_context_threshold is None, name
        else:
            threshold, long_prices = long
            assert m.pricing.long_context_threshold == threshold
            assert m.pricing.long_context == tier_of(long_prices), name
            assert m.pricing.tier_for(threshold) is m.pricing.base
            assert m.pricing.tier_for(threshold + 1) is m.pricing.long_context

    # spot checks that do not go through the helper
    pro = catalog.get("gemini-1.5-pro")
    assert pro is not None and pro.pricing.base.cached_input == D("0.3125")
    assert pro.pricing.long_context is not None and pro.pricing.long_context.cached_input == D("0.625")
    haiku = catalog.get("claude-3-haiku")
    assert haiku is not None and haiku.pricing.base.cache_write_rate == D("0.30")
    turbo = catalog.get("gpt-4-turbo")
    assert turbo is not None and turbo.pricing.base.cached_input_rate == D("10")

    # price version 1 of every model holds the same prices as the model
    versions = table_of(LlmPriceVersion)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(versions).order_by(versions.c.llm_id))).all()
    assert [(r.llm_id, r.version) for r in rows] == [(i, 1) for i in range(1, 16)]  # 12 chat + 3 embedding
    for row in rows:
        m = catalog.by_id(row.llm_id)
        assert m is not None
        assert row.input_price == m.pricing.base.input
        assert row.output_price == m.pricing.base.output
        assert row.cached_input_price == m.pricing.base.cached_input
        assert row.cache_write_price == m.pricing.base.cache_write
        assert row.long_context_threshold == m.pricing.long_context_threshold


async def test_sqlite_stores_prices_as_exact_text(sqlite_database: str) -> None:
    with sqlite3.connect(sqlite_path(sqlite_database)) as raw:
        row = raw.execute(
            "SELECT input_price, cached_input_price, long_cached_input_price, typeof(cached_input_price) "
            "FROM llms WHERE name = 'gemini-1.5-pro'"
        ).fetchone()
        assert row == ("1.25", "0.3125", "0.625", "text")
        flash = raw.execute(
            "SELECT cached_input_price, long_cached_input_price FROM llms WHERE name = 'gemini-1.5-flash'"
        ).fetchone()
        assert flash == ("0.01875", "0.0375")
        kinds = set()
        for table in ("llms", "llm_price_versions"):
            for column in PRICE_COLUMNS:
                kinds |= {r[0] for r in raw.execute(f"SELECT DISTINCT typeof({column}) FROM {table}")}
        assert kinds == {"text", "null"}


# -- migrations ----------------------------------------------------------------------------------


async def test_migrating_twice_changes_nothing(db_url: str, engine: AsyncEngine) -> None:
    before = await run(engine, schema_dump)
    await engine.dispose()
    off_loop(upgrade, db_url)
    after = await run(engine, schema_dump)
    assert after == before
    assert len(after["llm_rows"]) == 15  # 12 chat models (0002) + 3 embedding models (0008)
    assert [tuple(r) for r in after["alembic_version_rows"]] == [(head_revision(),)]


async def test_downgrade_to_base_then_upgrade_again(db_url: str, engine: AsyncEngine) -> None:
    before = await run(engine, schema_dump)
    await engine.dispose()
    off_loop(downgrade, db_url, "base")
    tables = await run(engine, lambda c: sorted(sa.inspect(c).get_table_names()))
    assert tables == ["alembic_version"]
    remaining = await run(
        engine, lambda c: c.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar()
    )
    assert remaining == 0
    await engine.dispose()

    off_loop(upgrade, db_url)
    after = await run(engine, schema_dump)
    assert after == before
    async with engine.connect() as conn:
        catalog = await load_catalog(conn)
    assert len(catalog) == 15  # 12 chat models (0002) + 3 embedding models (0008)
    # a new model after a re-seed gets an id past the seeded ones (the PostgreSQL sequence was moved)
    async with engine.begin() as conn:
        new_id = (
            await conn.execute(
                sa.text(
                    "INSERT INTO llms (name, provider, upstream_model, display_name, input_price, "
                    "output_price, context_window, max_output_tokens) "
                    "VALUES ('m13', 'openai', 'm13', 'M13', '1', '2', 1000, 100) RETURNING id"
                )
            )
        ).scalar_one()
    assert new_id == 16


def _mapped(name: str | None, kind: str, _parents: Any) -> bool:
    """What the drift check compares: not usage_logs' partitions and gate (PostgreSQL, 0015, unmapped)."""
    return not (kind == "table" and name is not None and is_partitioning_table(name))


def _compared(dialect: str) -> Any:
    """On PostgreSQL usage_logs' request id is unique through the gate table (0015: a partitioned table's
    unique key must hold created_at): the model's UNIQUE (request_id) is SQLite's; test_partitions tests the
    gate."""

    def include(obj: Any, name: str | None, kind: str, _reflected: bool, _other: Any) -> bool:
        return not (
            dialect == "postgresql"
            and kind == "unique_constraint"
            and name in ("uq_usage_logs_request_id", "uq_usage_logs_request_id_created_at")
        )

    return include


async def test_models_and_migrated_database_do_not_differ(engine: AsyncEngine) -> None:
    def diff(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "target_metadata": Base.metadata,
                "include_name": _mapped,
                "include_object": _compared(conn.dialect.name),
            },
        )
        return list(compare_metadata(context, Base.metadata))

    assert await run(engine, diff) == []


async def test_drift_would_be_detected(engine: AsyncEngine) -> None:
    """The comparison above is not vacuous: a dropped index shows up as a difference."""
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP INDEX ix_usage_logs_created_at"))

    def diff(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": _mapped,
                "include_object": _compared(conn.dialect.name),
            },
        )
        return list(compare_metadata(context, Base.metadata))

    found = await run(engine, diff)
    assert len(found) == 1
    assert found[0][0] == "add_index"
    assert found[0][1].name == "ix_usage_logs_created_at"


# -- price versions ------------------------------------------------------------------------------


async def test_set_price_adds_a_version_and_keeps_the_old_one(engine: AsyncEngine) -> None:
    versions = table_of(LlmPriceVersion)
    async with engine.connect() as conn:
        v1_before = (
            await conn.execute(sa.select(versions).where(versions.c.llm_id == 1, versions.c.version == 1))
        ).one()
    async with engine.begin() as conn:
        version = await set_price(conn, "gpt-4o", PriceChange(input_price=D("3.00"), output_price=D("12.50")))
    assert version == 2
    async with engine.connect() as conn:
        rows = (
            await conn.execute(sa.select(versions).where(versions.c.llm_id == 1).order_by(versions.c.version))
        ).all()
        catalog = await load_catalog(conn)
        total_versions = (await conn.execute(sa.select(sa.func.count()).select_from(versions))).scalar_one()
    assert len(rows) == 2
    assert tuple(rows[0]) == tuple(v1_before)  # version 1 is untouched, to the microsecond
    assert rows[0].input_price == D("2.50") and rows[0].output_price == D("10.00")
    v2 = rows[1]
    assert (v2.version, v2.input_price, v2.output_price) == (2, D("3.00"), D("12.50"))
    assert v2.cached_input_price == D("1.25")  # unset prices keep their current value
    assert v2.cache_write_price is None
    assert v2.effective_from >= v1_before.effective_from
    assert total_versions == 16  # 15 seeded versions (12 chat + 3 embedding) and the new one

    m = catalog.get("gpt-4o")
    assert m is not None
    assert m.price_version == 2
    assert m.pricing.base == PriceTier(input=D("3.00"), output=D("12.50"), cached_input=D("1.25"))
    other = catalog.get("gpt-4o-mini")
    assert other is not None and other.price_version == 1 and other.pricing.base.input == D("0.15")

    async with engine.begin() as conn:
        assert await set_price(conn, "gpt-4o", PriceChange(input_price=D("2"), output_price=D("8"))) == 3
    with pytest.raises(ModelNotFound):
        async with engine.begin() as conn:
            await set_price(conn, "gpt-9", PriceChange(input_price=D("1"), output_price=D("1")))
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(versions))).scalar_one() == 17
    # an explicit None clears a price (it then bills at the input price); a left-out one is kept
    cleared = PriceChange(input_price=D("2"), output_price=D("8"), cached_input_price=None)
    async with engine.begin() as conn:
        assert await set_price(conn, "gpt-4o", cleared) == 4
    async with engine.connect() as conn:
        v4 = (
            await conn.execute(sa.select(versions).where(versions.c.llm_id == 1, versions.c.version == 4))
        ).one()
    assert (v4.cached_input_price, v4.input_price) == (None, D("2"))
