"""The CLI's admin reads and invoices: `users list|show`, `invoices create|show|list`.

The CLI runs in-process on the database of a running (in-process) gateway, so what it prints can be
compared with what the admin API answers for the same rows: the same JSON, field for field.
Bad input: non-zero exit, one line on stderr, nothing on stdout, nothing changed.
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pricing.money import format_usd, round_to_nano
from tests.integration.conftest import Gateway
from tests.integration.helpers import ADMIN, UNKNOWN_ID, Run, api, chat, cli, sqlite_url

TABLES = ("users", "workspaces", "api_keys", "billing_events", "credit_accounts", "invoices")


@pytest.fixture
def backend() -> str:
    return "postgres+redis"


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_database() -> str:
    return "reset"  # one PostgreSQL database for the module, emptied between tests


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN}


def run(gw: Gateway, *args: str) -> Run:
    """The CLI on the gateway's own database and ledger."""
    env = {"SYNAPGATE_REDIS_URL": gw.redis_url} if gw.redis_url else {}
    return cli(gw.settings.database_url, *args, env=env)


def mini_cost(prompt: int, completion: int) -> int:
    return round_to_nano((prompt * Decimal("0.15") + completion * Decimal("0.60")) / Decimal(1_000_000))


async def test_users_list_and_show_print_what_the_api_answers(gateway: Gateway) -> None:
    ids = [
        run(gateway, "users", "create", "--email", f"u{i}@example.com").json()["user_id"] for i in range(3)
    ]
    run(gateway, "credits", "add", "--user", ids[1], "--amount-usd", "2.5").json()
    first = run(gateway, "users", "list", "--limit", "2").json()
    assert first["total"] == 3 and first["has_more"] is True and len(first["data"]) == 2
    rest = run(gateway, "users", "list", "--limit", "2", "--offset", "2").json()
    assert rest["has_more"] is False and len(rest["data"]) == 1
    assert [u["id"] for u in first["data"] + rest["data"]] == ids  # oldest first: creation order
    listed = await api(gateway, "GET", "/users")
    assert first["data"] + rest["data"] == listed.json()["data"]
    by_email = run(gateway, "users", "list", "--email", "U2@example.com").json()
    assert [u["id"] for u in by_email["data"]] == [ids[2]]

    shown = run(gateway, "users", "show", "--user", ids[1]).json()
    assert shown["balance_usd"] == "2.500000000" and shown["balance_nano"] == 2_500_000_000
    assert shown == (await api(gateway, "GET", f"/users/{ids[1]}")).json()


async def test_invoices_create_show_and_list(gateway: Gateway) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    user = run(gateway, "users", "create", "--email", "inv@example.com", "--credits-usd", "2").json()
    user_id = user["user_id"]
    key = run(gateway, "keys", "create", "--user", user_id).json()["key"]
    await chat(gateway, key, "one [mock prompt_tokens=1000 completion_tokens=100]")
    await chat(gateway, key, "two [mock prompt_tokens=10 completion_tokens=1]")
    end = datetime.now(UTC)
    cost = mini_cost(1000, 100) + mini_cost(10, 1)
    assert cost == 210_000 + 2_100

    created = run(
        gateway,
        "invoices",
        "create",
        "--user",
        user_id,
        "--period-start",
        start.astimezone(timezone(timedelta(hours=2))).isoformat(),
        "--period-end",
        end.isoformat().replace("+00:00", "Z"),
    ).json()
    assert [(ln["kind"], ln["model"], ln["requests"], ln["amount_nano"]) for ln in created["lines"]] == [
        ("usage", "gpt-4o-mini", 2, -cost),
        ("credit", None, None, 2_000_000_000),
    ]
    assert created["total_nano"] == 2_000_000_000 - cost
    assert created["total_usd"] == format_usd(2_000_000_000 - cost) == "1.999787900"
    assert created["closing_balance_nano"] - created["opening_balance_nano"] == created["total_nano"]
    via_api = (await api(gateway, "GET", f"/billing/invoice/{created['id']}")).json()
    assert created == via_api
    assert run(gateway, "invoices", "show", "--invoice", created["id"]).json() == via_api
    listed = run(gateway, "invoices", "list", "--user", user_id).json()
    assert [i["id"] for i in listed["data"]] == [created["id"]] and listed["total"] == 1

    again = run(gateway, "invoices", "create", "--user", user_id, "--period-start", start.isoformat(),
                "--period-end", end.isoformat())  # fmt: skip
    assert again.problems_as_bad_input(f"overlaps invoice {created['id']}") == []
    assert await gateway.scalar("SELECT COUNT(*) FROM invoices") == 1


def _state(path: Path) -> dict[str, Any]:
    with closing(sqlite3.connect(path)) as conn:
        state: dict[str, Any] = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        state["balances"] = conn.execute(
            "SELECT user_id, balance_nano, version FROM credit_accounts"
        ).fetchall()
        state["invoices"] = conn.execute("SELECT id, total_nano, period_start FROM invoices").fetchall()
        state["invoiced"] = conn.execute("SELECT id, invoice_id FROM billing_events ORDER BY id").fetchall()
    return state


def test_bad_admin_input_changes_nothing(sqlite_template: Path, tmp_path: Path) -> None:
    path = tmp_path / "populated.db"
    shutil.copy(sqlite_template, path)
    user_id = cli(
        sqlite_url(path), "users", "create", "--email", "a@example.com", "--credits-usd", "1"
    ).json()["user_id"]
    now = datetime.now(UTC)
    day_ago, hour_ahead = (now - timedelta(days=1)).isoformat(), (now + timedelta(hours=1)).isoformat()
    three, two = (now - timedelta(days=3)).isoformat(), (now - timedelta(days=2)).isoformat()
    invoice = cli(
        sqlite_url(path),
        "invoices",
        "create",
        "--user",
        user_id,
        "--period-start",
        three,
        "--period-end",
        two,
    )
    invoice_id = invoice.json()["id"]
    before = _state(path)
    cases: list[tuple[tuple[str, ...], str]] = [
        (("users", "show", "--user", "nope"), "not an id"),
        (("users", "show", "--user", UNKNOWN_ID), f"no user with id {UNKNOWN_ID}"),
        (("users", "show"), "--user"),
        (("users", "list", "--limit", "0"), "--limit"),
        (("users", "list", "--limit", "1001"), "--limit"),
        (("users", "list", "--offset", "-1"), "--offset"),
        (("users", "list", "--status", "gone"), "--status"),
        (("users", "list", "--email", "nobody"), "--email: not an email"),
        (("users", "list", "--offset", str(2**53 + 1)), "--offset: 'offset' must be between 0 and"),
        (("invoices", "create", "--user", user_id, "--period-start", "2026-11-01T00:00:00",
          "--period-end", day_ago), "needs a time zone"),
        (("invoices", "create", "--user", user_id, "--period-start", day_ago,
          "--period-end", "tomorrow"), "not an ISO 8601 time"),
        (("invoices", "create", "--user", user_id, "--period-start", day_ago,
          "--period-end", (now - timedelta(days=2)).isoformat()), "must be after"),
        (("invoices", "create", "--user", user_id, "--period-start", day_ago,
          "--period-end", hour_ahead), "in the future"),
        (("invoices", "create", "--user", UNKNOWN_ID, "--period-start", day_ago,
          "--period-end", now.isoformat()), f"no user with id {UNKNOWN_ID}"),
        (("invoices", "create", "--user", user_id, "--period-start", (now - timedelta(days=4)).isoformat(),
          "--period-end", (now - timedelta(days=2, hours=12)).isoformat()), f"overlaps invoice {invoice_id}"),
        (("invoices", "create", "--user", user_id, "--period-start", day_ago), "--period-end"),
        (("invoices", "show", "--invoice", UNKNOWN_ID), f"no invoice with id {UNKNOWN_ID}"),
        (("invoices", "show", "--invoice", "x"), "not an id"),
        (("invoices", "list", "--user", UNKNOWN_ID), f"no user with id {UNKNOWN_ID}"),
    ]  # fmt: skip

    def one(index: int) -> list[str]:
        args, expect = cases[index]
        copy = tmp_path / f"case{index}.db"
        shutil.copy(path, copy)
        problems = cli(sqlite_url(copy), *args, cwd=tmp_path).problems_as_bad_input(expect)
        if _state(copy) != before:
            problems.append("the database changed")
        return [f"{' '.join(args)}: {p}" for p in problems]

    failures = [p for index in range(len(cases)) for p in one(index)]
    assert not failures, "\n".join(failures)
    assert uuid.UUID(invoice_id)


async def test_the_cli_and_the_api_refuse_the_same_bad_input_the_same_way(gateway: Gateway) -> None:
    """One rule, two consumers: each bad input gets the same code and the same words from both."""
    from gateway.cli import CLI_FLAGS

    a = (await api(gateway, "POST", "/users", json={"email": "a@example.com"})).json()
    b = (await api(gateway, "POST", "/users", json={"email": "b@example.com"})).json()
    foreign = b["workspaces"][0]["workspace_id"]
    first = {"user_id": a["id"], "amount_usd": "1", "idempotency_key": "same-key"}
    assert (await api(gateway, "POST", "/billing/add-credits", json=first)).status_code == 201
    assert (
        run(gateway, "credits", "add", "--user", a["id"], "--amount-usd", "1", "--idempotency-key", "k2").code
        == 0
    )

    cases: list[tuple[str, str, dict[str, Any], tuple[str, ...], str]] = [
        # (method, path, API body, CLI args, the code both must mean)
        ("POST", "/keys", {"user_id": a["id"], "workspace_id": foreign},
         ("keys", "create", "--user", a["id"], "--workspace", foreign), "not_a_member"),
        ("POST", "/keys", {"user_id": a["id"], "allowed_models": ["no-such-model"]},
         ("keys", "create", "--user", a["id"], "--models", "no-such-model"), "unknown_models"),
        ("POST", "/users", {"email": "not-an-email"},
         ("users", "create", "--email", "not-an-email"), "invalid_email"),
        ("POST", "/users", {"email": "A@Example.com"},
         ("users", "create", "--email", "A@Example.com"), "user_exists"),
        ("POST", "/keys", {"user_id": UNKNOWN_ID},
         ("keys", "create", "--user", UNKNOWN_ID), "user_not_found"),
        ("POST", "/billing/add-credits", {"user_id": a["id"], "amount_usd": "1.5abc", "idempotency_key": "x"},
         ("credits", "add", "--user", a["id"], "--amount-usd", "1.5abc", "--idempotency-key", "x"),
         "invalid_amount"),
        ("POST", "/billing/add-credits", {**first, "amount_usd": "2"},
         ("credits", "add", "--user", a["id"], "--amount-usd", "2", "--idempotency-key", "same-key"),
         "idempotency_key_reused"),
    ]  # fmt: skip
    before = (
        await gateway.rows("SELECT COUNT(*) FROM users"),
        await gateway.rows("SELECT COUNT(*) FROM api_keys"),
    )
    for method, path, body, args, code in cases:
        error = (await api(gateway, method, path, json=body)).json()["error"]
        line = run(gateway, *args).error_line()
        assert error["code"] == code, (path, body, error)
        # The API says "'param': Message." and the CLI "flag: message": the same words from the same rule.
        assert error["param"] is not None and line.startswith(f"{CLI_FLAGS[error['param']]}: "), (error, line)
        api_words = error["message"].split(": ", 1)[1].rstrip(".")
        cli_words = line.split(": ", 1)[1]
        assert api_words.lower() == cli_words.lower(), (code, api_words, cli_words)
    after = (
        await gateway.rows("SELECT COUNT(*) FROM users"),
        await gateway.rows("SELECT COUNT(*) FROM api_keys"),
    )
    assert after == before
    balance = await gateway.scalar("SELECT balance_nano FROM credit_accounts WHERE user_id = :u", u=a["id"])
    assert balance == 2_000_000_000  # the replay with another amount added nothing, on either side
