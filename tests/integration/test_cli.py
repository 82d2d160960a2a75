"""The `synapgate` CLI against a per-test database, run in-process through `gateway.cli.main(argv)`.

Success: exit 0, one JSON object on stdout, nothing on stderr. Bad input: non-zero exit, exactly one
line on stderr starting with "synapgate", nothing on stdout, and the database unchanged (each bad-input
case runs on its own copy of a populated SQLite database). Three tests run the installed entry point as a
real subprocess: `--help`, the SQLite default from another directory, and `serve` refusing a bad port.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from storage.accounts.credentials import cipher_for
from tests.integration.helpers import UNKNOWN_ID, Run, cli, cli_env, sqlite_url

pytestmark = pytest.mark.integration

SECRET = "cli-test-secret-key"
STATE_TABLES = (
    "users",
    "workspaces",
    "workspace_members",
    "api_keys",
    "billing_events",
    "credit_accounts",
    "llms",
    "llm_price_versions",
    "provider_credentials",
)


def entry_point(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Run:
    """The installed `synapgate` script as a real subprocess (only for what in-process runs cannot show)."""
    script = Path(sys.executable).with_name("synapgate")
    proc = subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        env=cli_env(None, env),
        cwd=cwd,
        timeout=120,
    )
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def db_bytes(path: Path) -> bytes:
    """The database file and its write-ahead log, if one is left."""
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def sqlite_state(path: Path) -> dict[str, Any]:
    """Row counts and the money-relevant content of a SQLite database, for before/after comparison."""
    with closing(sqlite3.connect(path)) as conn:
        state: dict[str, Any] = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in STATE_TABLES
        }
        state["balances"] = conn.execute(
            "SELECT user_id, balance_nano, version FROM credit_accounts ORDER BY user_id"
        ).fetchall()
        state["llm_prices"] = conn.execute(
            "SELECT id, price_version, input_price, cached_input_price, output_price, long_context_threshold "
            "FROM llms ORDER BY id"
        ).fetchall()
        state["keys"] = conn.execute("SELECT id, status FROM api_keys ORDER BY id").fetchall()
        state["credentials"] = conn.execute(
            "SELECT user_id, provider, encrypted_key FROM provider_credentials ORDER BY user_id, provider"
        ).fetchall()
        state["emails"] = conn.execute("SELECT email FROM users ORDER BY email").fetchall()
    return state


def pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _pg_state(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(pg_dsn(url))
    try:
        state: dict[str, Any] = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in STATE_TABLES}
        balances = await conn.fetch(
            "SELECT user_id, balance_nano, version FROM credit_accounts ORDER BY user_id"
        )
        state["balances"] = [tuple(r) for r in balances]
        llms = await conn.fetch("SELECT id, price_version, input_price::text FROM llms ORDER BY id")
        state["llm_prices"] = [tuple(r) for r in llms]
        state["emails"] = [r[0] for r in await conn.fetch("SELECT email FROM users ORDER BY email")]
        return state
    finally:
        await conn.close()


def pg_state(url: str) -> dict[str, Any]:
    return asyncio.run(_pg_state(url))


def in_turn(*calls: Callable[[], Run]) -> list[Run]:
    """Run CLI commands one after the other; results in call order."""
    return [call() for call in calls]


# -- the happy path, on a fresh SQLite file ------------------------------------------------------


def test_cli_end_to_end_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    url = sqlite_url(path)  # plain sqlite://: the CLI picks the async driver itself

    # migrate on an empty file, then again: both succeed, the second changes nothing
    assert cli(url, "migrate").json() == {"migrated": True, "database": "sqlite+aiosqlite"}
    with closing(sqlite3.connect(path)) as conn:
        schema_before = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    state_before = sqlite_state(path)
    assert cli(url, "migrate").json() == {"migrated": True, "database": "sqlite+aiosqlite"}
    with closing(sqlite3.connect(path)) as conn:
        assert (
            conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
            == schema_before
        )
    assert sqlite_state(path) == state_before
    assert state_before["llms"] == 15  # 12 chat models (0002) + 3 embedding models (0008)
    assert len(state_before["llm_prices"]) == 15
    assert state_before["users"] == 0

    # users create
    user = cli(
        url, "users", "create", "--email", "Alice@Example.com", "--name", "Alice", "--credits-usd", "5"
    ).json()
    user_id = user["user_id"]
    assert uuid.UUID(user_id).version == 4
    assert user["email"] == "alice@example.com"
    assert user["workspace_name"] == "alice@example.com's workspace"
    assert user["balance_usd"] == "5.000000000"
    uid = uuid.UUID(user_id).hex  # SQLite stores a Uuid as 32 hex characters

    # independent commands, at once: a key, a top-up, the catalog, a stored provider key
    provider_key = "sk-proj-Zq8wXe3rTy6uIo9pAs2dFg5h"
    top_up = ("credits", "add", "--user", user_id, "--amount-usd", "10.50", "--idempotency-key", "top-1")
    key_run, first, listed, stored = in_turn(
        lambda: cli(
            url, "keys", "create", "--user", user_id, "--name", "ci", "--models", "gpt-4o, claude-3-haiku"
        ),
        lambda: cli(url, *top_up),
        lambda: cli(url, "llms", "list"),
        lambda: cli(
            url,
            "credentials",
            "set",
            "--user",
            user_id,
            "--provider",
            "openai",
            stdin=provider_key + "\n",
            env={"SYNAPGATE_SECRET_KEY": SECRET},
        ),
    )

    # keys create: the plaintext is printed once; only its SHA-256 is stored
    created = key_run.json()
    key = created["key"]
    assert key.startswith("sk-sg-")
    assert len(key) == len("sk-sg-") + 43
    assert key_run.out.count(key) == 1
    assert created["user_id"] == user_id
    assert created["workspace_id"] == user["workspace_id"]
    assert created["allowed_models"] == ["gpt-4o", "claude-3-haiku"]
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute(
            "SELECT key_hash, key_prefix, user_id, status, allowed_models FROM api_keys WHERE id = ?",
            (uuid.UUID(created["id"]).hex,),
        ).fetchone()
    assert row[0] == hashlib.sha256(key.encode()).hexdigest()
    assert row[1] == key[:12]
    assert row[2:4] == (uid, "active")
    assert json.loads(row[4]) == ["gpt-4o", "claude-3-haiku"]

    # credits add with an idempotency key
    top_up_fields = ("user_id", "amount_usd", "amount_nano", "balance_usd", "idempotency_key", "replayed")
    assert {k: first.json()[k] for k in top_up_fields} == {
        "user_id": user_id,
        "amount_usd": "10.500000000",
        "amount_nano": 10_500_000_000,
        "balance_usd": "15.500000000",
        "idempotency_key": "top-1",
        "replayed": False,
    }

    # llms list
    models = listed.json()["models"]
    assert len(models) == 15  # 12 chat models (0002) + 3 embedding models (0008)
    by_name = {m["name"]: m for m in models}
    assert by_name["gpt-4o"] == {
        "name": "gpt-4o",
        "provider": "openai",
        "upstream_model": "gpt-4o",
        "active": True,
        "price_version": 1,
        "input": "2.50",
        "cached_input": "1.25",
        "cache_write": "2.50",
        "output": "10.00",
        "context_window": 128000,
        "max_output_tokens": 16384,
        "aliases": [],
    }
    assert by_name["claude-3-haiku"]["aliases"] == ["claude-3-haiku-20240307"]  # migration 0009
    assert by_name["gemini-1.5-pro"]["cached_input"] == "0.3125"
    assert by_name["claude-3-sonnet"]["cache_write"] == "3.75"

    # credentials set: the key came from stdin and is stored encrypted
    assert stored.json() == {"user_id": user_id, "provider": "openai", "key_last4": "Fg5h"}
    assert provider_key not in stored.out
    with closing(sqlite3.connect(path)) as conn:
        token, last4 = conn.execute(
            "SELECT encrypted_key, key_last4 FROM provider_credentials WHERE user_id = ? AND provider = ?",
            (uid, "openai"),
        ).fetchone()
    assert last4 == "Fg5h"
    assert cipher_for(SECRET).decrypt(token).decode() == provider_key

    # the replayed top-up, a new price and a revoked key, at once
    second, changed, revoked = in_turn(
        lambda: cli(url, *top_up),
        lambda: cli(
            url, "llms", "set-price", "gpt-4o", "--input", "3.00", "--output", "12", "--cached-input", "1.5"
        ),
        lambda: cli(url, "keys", "revoke", "--key-id", created["id"]),
    )
    assert second.json() == {**first.json(), "replayed": True}
    assert changed.json() == {"name": "gpt-4o", "price_version": 2, "input": "3.00", "output": "12"}
    assert (revoked.json()["id"], revoked.json()["status"]) == (created["id"], "revoked")
    assert revoked.json()["revoked_at"] is not None and "key" not in revoked.json()

    balance, relisted, reconciled = in_turn(
        lambda: cli(url, "credits", "balance", "--user", user_id),
        lambda: cli(url, "llms", "list"),
        lambda: cli(url, "ledger", "reconcile"),
    )
    assert {k: balance.json()[k] for k in ("user_id", "balance_usd", "held_usd", "available_usd")} == {
        "user_id": user_id,
        "balance_usd": "15.500000000",
        "held_usd": "0.000000000",
        "available_usd": "15.500000000",
    }
    after = {m["name"]: m for m in relisted.json()["models"]}
    assert (after["gpt-4o"]["input"], after["gpt-4o"]["output"]) == ("3.00", "12")
    assert (after["gpt-4o"]["cached_input"], after["gpt-4o"]["price_version"]) == ("1.5", 2)
    assert after["gpt-4o-mini"] == by_name["gpt-4o-mini"]
    assert reconciled.json() == {"users": 1, "mismatches": [], "fixed": False}

    with closing(sqlite3.connect(path)) as conn:
        events = conn.execute(
            "SELECT type, amount_nano, idempotency_key FROM billing_events WHERE user_id = ? ORDER BY id",
            (uid,),
        ).fetchall()
        account = conn.execute(
            "SELECT balance_nano, version FROM credit_accounts WHERE user_id = ?", (uid,)
        ).fetchone()
        versions = conn.execute(
            "SELECT version, input_price, cached_input_price, output_price FROM llm_price_versions "
            "WHERE llm_id = 1 ORDER BY version"
        ).fetchall()
        status = conn.execute(
            "SELECT status, revoked_at IS NOT NULL FROM api_keys WHERE id = ?",
            (uuid.UUID(created["id"]).hex,),
        ).fetchone()
    assert events == [
        ("credit", 5_000_000_000, f"credit:signup:{user_id}"),
        ("credit", 10_500_000_000, "credit:top-1"),
    ]
    assert account == (15_500_000_000, 2)
    assert versions == [(1, "2.50", "1.25", "10.00"), (2, "3.00", "1.5", "12")]
    assert status == ("revoked", 1)

    # no secret in the database file (nor in its write-ahead log)
    stored_bytes = db_bytes(path)
    assert key.encode() not in stored_bytes
    assert key[12:].encode() not in stored_bytes
    assert provider_key.encode() not in stored_bytes
    assert provider_key[:-4].encode() not in stored_bytes


# -- PostgreSQL ----------------------------------------------------------------------------------


def test_cli_on_postgresql(pg_database: str) -> None:
    url = pg_dsn(pg_database)  # plain postgresql://: normalised to asyncpg by the settings
    assert cli(url, "migrate").json() == {"migrated": True, "database": "postgresql+asyncpg"}
    assert cli(url, "migrate").json() == {"migrated": True, "database": "postgresql+asyncpg"}
    assert pg_state(url)["llms"] == 15

    user = cli(url, "users", "create", "--email", "bob@example.com", "--credits-usd", "0.000000001").json()
    user_id = user["user_id"]
    assert user["balance_usd"] == "0.000000001"
    add = ["credits", "add", "--user", user_id, "--amount-usd", "2.5", "--idempotency-key", "pg-1"]
    first, priced = in_turn(
        lambda: cli(url, *add),
        lambda: cli(url, "llms", "set-price", "claude-3-haiku", "--input", "0.8", "--output", "4"),
    )
    assert first.json()["balance_usd"] == "2.500000001"
    assert priced.json()["price_version"] == 2
    replay, reconciled = in_turn(lambda: cli(url, *add), lambda: cli(url, "ledger", "reconcile"))
    assert (replay.json()["replayed"], replay.json()["balance_usd"]) == (True, "2.500000001")
    assert reconciled.json() == {"users": 1, "mismatches": [], "fixed": False}

    before = pg_state(url)
    assert before["users"] == 1
    assert before["billing_events"] == 2
    assert before["llm_price_versions"] == 16
    assert before["balances"] == [(uuid.UUID(user_id), 2_500_000_001, 2)]
    assert before["llm_prices"][6] == (7, 2, "0.800000000")
    runs = in_turn(
        lambda: cli(url, "users", "create", "--email", "BOB@example.com"),
        lambda: cli(url, "credits", "add", "--user", user_id, "--amount-usd", "1e12"),
    )
    assert runs[0].problems_as_bad_input("a user with email bob@example.com exists already") == []
    assert runs[1].problems_as_bad_input("larger than the ledger can hold") == []
    assert pg_state(url) == before


# -- bad input: a populated database, one copy per case ------------------------------------------


@dataclass(frozen=True)
class Populated:
    path: Path
    user_id: str
    workspace_id: str
    key_id: str
    state: dict[str, Any]


@pytest.fixture(scope="module")
def populated(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Populated:
    """A migrated database with a user (5 USD), a key and a stored OpenAI key, built with the CLI."""
    path = tmp_path_factory.mktemp("cli-populated") / "populated.db"
    shutil.copy(sqlite_template, path)
    url = sqlite_url(path)
    user = cli(url, "users", "create", "--email", "alice@example.com", "--credits-usd", "5").json()
    key_run, stored = in_turn(
        lambda: cli(url, "keys", "create", "--user", user["user_id"], "--name", "k"),
        lambda: cli(
            url,
            "credentials",
            "set",
            "--user",
            user["user_id"],
            "--provider",
            "openai",
            stdin="sk-populated-0000\n",
            env={"SYNAPGATE_SECRET_KEY": SECRET},
        ),
    )
    key = key_run.json()
    stored.json()
    state = sqlite_state(path)
    assert (state["users"], state["api_keys"], state["billing_events"], state["provider_credentials"]) == (
        1,
        1,
        1,
        1,
    )
    return Populated(path, user["user_id"], user["workspace_id"], key["id"], state)


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expect: str  # a piece of the one stderr line that says why
    stdin: str = ""
    env: dict[str, str] = field(default_factory=dict)


def run_bad_cases(populated: Populated, tmp_path: Path, cases: Sequence[Case]) -> None:
    def one(index: int, case: Case) -> list[str]:
        path = tmp_path / f"case{index}.db"
        shutil.copy(populated.path, path)
        env = dict(case.env)
        url = env.pop("SYNAPGATE_DATABASE_URL", sqlite_url(path))
        run = cli(url, *case.args, stdin=case.stdin, env=env, cwd=tmp_path)
        problems = run.problems_as_bad_input(case.expect)
        state = sqlite_state(path)
        if state != populated.state:
            changed = {k: (populated.state[k], v) for k, v in state.items() if populated.state[k] != v}
            problems.append(f"database changed: {changed}")
        return [f"{' '.join(case.args)} {case.env or ''}: {p}" for p in problems]

    failures = [p for index, case in enumerate(cases) for p in one(index, case)]
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "synapgate.db").exists()  # no command fell back to the default database


def test_bad_input_users_create(populated: Populated, tmp_path: Path) -> None:
    new = ("users", "create", "--email", "new@example.com")
    run_bad_cases(
        populated,
        tmp_path,
        [
            Case(("users", "create", "--email", "not-an-email"), "not an email address: 'not-an-email'"),
            Case(
                ("users", "create", "--email", "ALICE@Example.COM"),
                "a user with email alice@example.com exists",
            ),
            Case((*new, "--credits-usd", "-1"), "must be a positive amount"),
            Case((*new, "--credits-usd", "0"), "must be a positive amount"),
            Case((*new, "--credits-usd", "0.0000000001"), "finer than one nano-USD"),
            Case((*new, "--credits-usd", "1.5abc"), "not a decimal USD amount"),
            Case(("users", "create"), "the following arguments are required: --email"),
        ],
    )


def test_bad_input_keys(populated: Populated, tmp_path: Path) -> None:
    run_bad_cases(
        populated,
        tmp_path,
        [
            Case(("keys", "create", "--user", UNKNOWN_ID), f"no user with id {UNKNOWN_ID}"),
            Case(("keys", "create", "--user", "not-a-uuid"), "not an id: 'not-a-uuid'"),
            Case(
                ("keys", "create", "--user", populated.user_id, "--workspace", UNKNOWN_ID),
                f"--workspace: user {populated.user_id} is not a member of workspace {UNKNOWN_ID}",
            ),
            Case(
                ("keys", "create", "--user", populated.user_id, "--models", "gpt-4o,no-such-model"),
                "--models: models not in the catalog: no-such-model",
            ),
            Case(
                ("keys", "create", "--user", populated.user_id, "--models", " , "),
                "--models: the allow-list is empty",
            ),
            Case(("keys", "revoke", "--key-id", UNKNOWN_ID), f"--key-id: no key with id {UNKNOWN_ID}"),
            Case(("keys", "revoke", "--key-id", "123"), "not an id"),
        ],
    )


def test_bad_input_credits(populated: Populated, tmp_path: Path) -> None:
    add = ("credits", "add", "--user", populated.user_id, "--amount-usd")
    run_bad_cases(
        populated,
        tmp_path,
        [
            Case(
                ("credits", "add", "--user", UNKNOWN_ID, "--amount-usd", "1"), f"no user with id {UNKNOWN_ID}"
            ),
            Case(("credits", "add", "--user", "42", "--amount-usd", "1"), "not an id: '42'"),
            Case((*add, "-5"), "must be a positive amount: '-5'"),
            Case((*add, "0"), "must be a positive amount"),
            Case((*add, "0.0000000001"), "finer than one nano-USD"),
            Case((*add, "abc"), "not a decimal USD amount: 'abc'"),
            Case((*add, "NaN"), "not a finite USD amount"),
            Case((*add, "1e12"), "larger than the ledger can hold"),  # beyond a BIGINT of nano-USD
            Case(("credits", "balance", "--user", UNKNOWN_ID), f"no user with id {UNKNOWN_ID}"),
            Case(("credits", "balance", "--user", "x"), "not an id"),
        ],
    )


def test_bad_input_llms(populated: Populated, tmp_path: Path) -> None:
    price = ("llms", "set-price", "gpt-4o")
    run_bad_cases(
        populated,
        tmp_path,
        [
            Case(("llms", "set-price", "gpt-9", "--input", "1", "--output", "2"), "no model named 'gpt-9'"),
            Case((*price, "--input", "-1", "--output", "2"), "a price must be zero or more: '-1'"),
            Case((*price, "--input", "1", "--output", "-0.01"), "a price must be zero or more"),
            Case((*price, "--input", "abc", "--output", "2"), "not a decimal price: 'abc'"),
            Case((*price, "--input", "NaN", "--output", "2"), "a price must be zero or more"),
            Case((*price, "--input", "1"), "the following arguments are required: --output"),
            Case(("llms", "list", "--bogus"), "unrecognized arguments"),
        ],
    )


def test_bad_input_credentials(populated: Populated, tmp_path: Path) -> None:
    secret = {"SYNAPGATE_SECRET_KEY": SECRET}
    cset = ("credentials", "set", "--user", populated.user_id, "--provider")
    run_bad_cases(
        populated,
        tmp_path,
        [
            Case((*cset, "anthropic"), "SYNAPGATE_SECRET_KEY is not set", stdin="sk-ant-xyz\n"),
            Case((*cset, "anthropic"), "standard input: no provider key was given", env=secret),
            Case(
                (*cset, "anthropic"), "standard input: no provider key was given", stdin="   \n", env=secret
            ),
            Case((*cset, "anthropic"), "contains spaces", stdin="sk-ant xyz\n", env=secret),
            Case((*cset, "mistral"), "invalid choice: 'mistral'", stdin="sk-x\n", env=secret),
            Case(
                ("credentials", "set", "--user", UNKNOWN_ID, "--provider", "openai"),
                f"no user with id {UNKNOWN_ID}",
                stdin="sk-new-key\n",
                env=secret,
            ),
            Case(
                ("credentials", "set", "--user", "me", "--provider", "openai"),
                "not an id: 'me'",
                stdin="sk-new-key\n",
                env=secret,
            ),
        ],
    )


ALL_COMMANDS: list[tuple[str, ...]] = [
    ("migrate",),
    ("users", "create", "--email", "new@example.com"),
    ("keys", "create", "--user", UNKNOWN_ID),
    ("keys", "revoke", "--key-id", UNKNOWN_ID),
    ("credits", "add", "--user", UNKNOWN_ID, "--amount-usd", "1"),
    ("credits", "balance", "--user", UNKNOWN_ID),
    ("llms", "list"),
    ("llms", "set-price", "gpt-4o", "--input", "1", "--output", "2"),
    ("credentials", "set", "--user", UNKNOWN_ID, "--provider", "openai"),
    ("ledger", "reconcile"),
]


BAD_SETTINGS: list[tuple[dict[str, str], str]] = [
    (
        {"SYNAPGATE_DATABASE_URL": "mysql://root@127.0.0.1/synapgate"},
        "synapgate: error: SYNAPGATE_DATABASE_URL: unsupported database 'mysql'",
    ),
    (
        {"SYNAPGATE_DATABASE_URL": "nonsense"},
        "synapgate: error: SYNAPGATE_DATABASE_URL: not a database URL",
    ),
    (
        {"SYNAPGATE_DATABSE_URL": "sqlite:///typo.db"},
        "synapgate: error: SYNAPGATE_DATABSE_URL: not a SynapGate setting",
    ),
    (
        {"SYNAPGATE_FOO_API_KEY": "sk-foo-secret"},
        "synapgate: error: SYNAPGATE_FOO_API_KEY: not a SynapGate setting (unknown provider",
    ),
    (
        {"SYNAPGATE_REDIS_URL": "localhost:6379"},
        "synapgate: error: SYNAPGATE_REDIS_URL: must start with redis://",
    ),
]


def test_bad_settings_for_every_command(populated: Populated, tmp_path: Path) -> None:
    # each command meets one kind of bad setting; every kind is met twice
    cases = [
        Case(
            args,
            BAD_SETTINGS[i % len(BAD_SETTINGS)][1],
            stdin="sk-x\n",
            env={**BAD_SETTINGS[i % len(BAD_SETTINGS)][0], "SYNAPGATE_SECRET_KEY": SECRET},
        )
        for i, args in enumerate(ALL_COMMANDS)
    ]
    cases += [
        Case(
            ("migrate",),
            "synapgate: error: cannot use the database nowhere on 127.0.0.1:1: ",
            env={"SYNAPGATE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"},
        ),
        Case(
            ("llms", "list"),
            "synapgate: error: the database /nonexistent-dir/x/synapgate.db does not exist",
            env={"SYNAPGATE_DATABASE_URL": "sqlite:////nonexistent-dir/x/synapgate.db"},
        ),
        Case((), "the following arguments are required: command"),
    ]
    run_bad_cases(populated, tmp_path, cases)


# -- bugs ----------------------------------------------------------------------------------------


def test_users_create_with_an_unstorable_credit_changes_nothing(populated: Populated, tmp_path: Path) -> None:
    run_bad_cases(
        populated,
        tmp_path,
        [
            Case(
                ("users", "create", "--email", "big@example.com", "--credits-usd", "1e12"),
                "synapgate",
            )
        ],
    )


def test_set_price_refuses_a_price_finer_than_the_column(populated: Populated, tmp_path: Path) -> None:
    run_bad_cases(
        populated,
        tmp_path,
        [Case(("llms", "set-price", "gpt-4o", "--input", "0.0000000001", "--output", "1"), "synapgate")],
    )


def test_set_price_refuses_a_price_beyond_the_column(populated: Populated, tmp_path: Path) -> None:
    run_bad_cases(
        populated,
        tmp_path,
        [Case(("llms", "set-price", "gpt-4o", "--input", "1e400", "--output", "1"), "synapgate")],
    )


def test_set_price_refuses_a_negative_long_threshold(populated: Populated, tmp_path: Path) -> None:
    run_bad_cases(
        populated,
        tmp_path,
        [
            Case(
                (
                    "llms",
                    "set-price",
                    "gemini-1.5-pro",
                    "--input",
                    "1",
                    "--output",
                    "1",
                    "--long-threshold",
                    "-5",
                ),
                "synapgate",
            )
        ],
    )


# -- the entry point itself (real subprocesses) --------------------------------------------------


def test_entry_point_help_lists_the_commands_and_no_mock_upstream(tmp_path: Path) -> None:
    run = entry_point("--help", cwd=tmp_path)
    assert run.code == 0 and run.err == "", run
    for command in (
        "serve",
        "migrate",
        "users",
        "keys",
        "credits",
        "llms",
        "credentials",
        "invoices",
        "ledger",
    ):
        assert command in run.out
    assert "mock-upstream" not in run.out  # the mock lives in devtools/, outside the shipped package


def test_sqlite_default_from_another_directory_says_to_migrate_and_creates_nothing(tmp_path: Path) -> None:
    run = entry_point("users", "list", cwd=tmp_path)
    assert run.problems_as_bad_input("run `synapgate migrate` first") == []
    assert "synapgate.db does not exist" in run.err and "no such table" not in run.err
    assert list(tmp_path.iterdir()) == []  # no empty synapgate.db left behind


def test_serve_refuses_a_port_out_of_range(tmp_path: Path) -> None:
    run = entry_point("serve", "--port", "70000", cwd=tmp_path)
    assert run.code == 2 and run.out == "", run
    assert run.err.count("\n") == 1 and "--port: a port is from 1 to 65535: '70000'" in run.err
    assert list(tmp_path.iterdir()) == []  # refused before anything was migrated or bound


# -- serve, and databases that are not ready (in-process) ----------------------------------------


def test_serve_honours_synapgate_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    pg = {"SYNAPGATE_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/unused", "SYNAPGATE_WORKERS": "2"}
    assert cli(None, "serve", env=pg, cwd=tmp_path).code == 0
    assert cli(None, "serve", "--workers", "3", "--port", "9001", env=pg, cwd=tmp_path).code == 0
    assert [(s["workers"], s["port"]) for s in started] == [(2, 8080), (3, 9001)]
    sqlite = {"SYNAPGATE_DATABASE_URL": sqlite_url(tmp_path / "g.db"), "SYNAPGATE_WORKERS": "2"}
    refused = cli(None, "serve", env=sqlite, cwd=tmp_path)
    assert refused.problems_as_bad_input("SQLite serves one worker") == [] and len(started) == 2
    bad = cli(None, "serve", env={**pg, "SYNAPGATE_PORT": "70000"}, cwd=tmp_path)
    assert bad.problems_as_bad_input("SYNAPGATE_PORT") == [] and len(started) == 2


def test_an_unmigrated_database_is_named_in_words(tmp_path: Path, pg_template: str) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    run = cli(sqlite_url(empty), "users", "list", cwd=tmp_path)
    assert run.problems_as_bad_input(f"the database {empty} is not migrated: run `synapgate migrate`") == []
    missing = "postgresql://postgres@127.0.0.1:5432/sg_t_does_not_exist"
    run = cli(missing, "users", "list", cwd=tmp_path)
    assert (
        run.problems_as_bad_input("the database sg_t_does_not_exist on 127.0.0.1:5432 does not exist") == []
    )
    assert "DBAPIError" not in run.err and "InvalidCatalogName" not in run.err


def test_a_constraint_violation_is_said_in_words() -> None:
    from sqlalchemy.exc import IntegrityError

    from config import Settings
    from gateway.cli import database_problem

    exc = IntegrityError("INSERT INTO api_keys …", {}, Exception("FOREIGN KEY constraint failed"))
    problem = database_problem(exc, Settings(database_url="sqlite:///x.db"))
    assert problem is not None and "names a row that does not exist" in problem
    assert "IntegrityError" not in problem and "nothing was changed" in problem
