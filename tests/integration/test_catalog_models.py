"""A catalog that keeps up: models added by the admin API and the CLI, aliases (Claude Code's dated ids), and
LiteLLM's price map imported through one service function (dry run first; new price versions, never a
rewrite of charged history).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pricing.money import round_to_nano
from tests.integration.conftest import Gateway
from tests.integration.helpers import ADMIN, Run, api, chat, cli, error_of

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "litellm_prices.json"
M = Decimal(1_000_000)

SONNET: dict[str, Any] = {
    "name": "claude-sonnet-4-5",
    "provider": "anthropic",
    "upstream_model": "claude-sonnet-4-5-20250929",
    "aliases": ["claude-sonnet-4-5-20250929", "sonnet"],
    "input_price": "3",
    "output_price": "15",
    "cached_input_price": "0.30",
    "cache_write_price": "3.75",
    "long_context_threshold": 200_000,
    "long_input_price": "6",
    "long_output_price": "22.5",
    "context_window": 1_000_000,
    "max_output_tokens": 64_000,
    "supports_vision": True,
}


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN}


def run(gw: Gateway, *args: str) -> Run:
    return cli(gw.settings.database_url, *args)


async def seed_key(gw: Gateway) -> str:
    _user, key = await gw.seed_user("5")
    return key


async def test_a_model_added_by_the_api_is_served_under_its_aliases(gateway: Gateway) -> None:
    created = await api(gateway, "POST", "/llms", json=SONNET)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["aliases"] == ["claude-sonnet-4-5-20250929", "sonnet"]
    assert body["price_version"] == 1 and len(body["price_history"]) == 1
    assert body["prices"]["long_context_threshold"] == 200_000 and body["prices"]["long_output"] == "22.5"
    assert (body["display_name"], body["supports_vision"], body["supports_tools"]) == (
        SONNET["name"],
        True,
        True,
    )

    # Claude Code sends the dated id: it resolves to the catalog model, and is billed at its prices.
    key = await seed_key(gateway)
    raw = await chat(gateway, key, "hi", model="claude-sonnet-4-5-20250929")
    assert raw.http_response.status_code == 200
    seen = gateway.mock.app.requests[-1]
    assert seen.path == "/v1/messages" and seen.body["model"] == "claude-sonnet-4-5-20250929"
    row = (
        await gateway.rows(
            "SELECT u.model, u.price_version, u.cost_nano, l.name "
            "FROM usage_logs u JOIN llms l ON l.id = u.llm_id"
        )
    )[0]
    assert row[0] == "claude-sonnet-4-5" and row[1] == 1 and row[3] == "claude-sonnet-4-5"
    assert row[2] == round_to_nano((12 * Decimal(3) + 8 * Decimal(15)) / M)  # the mock's 12 in, 8 out

    listed = (await api(gateway, "GET", "/llms", params={"provider": "anthropic"})).json()["data"]
    by_name = {m["name"]: m["aliases"] for m in listed}
    assert by_name["claude-3-haiku"] == ["claude-3-haiku-20240307"]  # the seeded dated ids (migration 0009)
    assert by_name["claude-sonnet-4-5"] == ["claude-sonnet-4-5-20250929", "sonnet"]


async def test_adding_models_and_aliases_follows_the_rules(gateway: Gateway) -> None:
    assert (await api(gateway, "POST", "/llms", json=SONNET)).status_code == 201
    conflict = error_of(await api(gateway, "POST", "/llms", json=SONNET), 409)
    assert (conflict["code"], conflict["param"]) == ("model_exists", "name")
    taken = error_of(await api(gateway, "POST", "/llms", json={**SONNET, "name": "other"}), 409)
    assert (taken["code"], taken["param"]) == ("alias_taken", "aliases")
    assert "sonnet" in taken["message"]
    for change, param, status in [
        ({"provider": "acme"}, "provider", 400),
        ({"input_price": "-1"}, "input_price", 400),
        ({"long_input_price": None}, "long_input_price", 400),
        ({"max_output_tokens": 2_000_000}, "max_output_tokens", 400),
        ({"aliases": ["two words"]}, "aliases", 400),
        ({"aliases": ["gpt-4o"]}, "aliases", 409),  # another model's name
    ]:
        error = error_of(await api(gateway, "POST", "/llms", json={**SONNET, "name": "x", **change}), status)
        assert error["param"] == param, (change, error)
    key = await seed_key(gateway)
    assert error_of(await api(gateway, "POST", "/llms", key=key, json={**SONNET, "name": "y"}), 403)
    assert await gateway.scalar("SELECT COUNT(*) FROM llms WHERE name IN ('x', 'y', 'other')") == 0

    added = await api(gateway, "POST", "/llms/gpt-4o/aliases", json={"aliases": ["gpt-4o-2024-08-06"]})
    assert added.status_code == 200 and added.json()["aliases"] == ["gpt-4o-2024-08-06"]
    assert error_of(await api(gateway, "POST", "/llms/gpt-9/aliases", json={"aliases": ["z"]}), 404)
    raw = await chat(gateway, key, "hi", model="gpt-4o-2024-08-06")
    assert raw.http_response.status_code == 200
    assert gateway.mock.app.requests[-1].body["model"] == "gpt-4o"


async def test_cli_llms_add_alias_and_list(gateway: Gateway) -> None:
    added = run(
        gateway, "llms", "add", "claude-opus-4-1", "--provider", "anthropic",
        "--upstream", "claude-opus-4-1-20250805",
        "--alias", "claude-opus-4-1-20250805", "--input", "15", "--output", "75", "--cached-input", "1.5",
        "--cache-write", "18.75", "--context-window", "200000", "--max-output", "32000", "--vision",
    ).json()  # fmt: skip
    shown = (await api(gateway, "GET", "/llms/claude-opus-4-1")).json()
    assert added == {k: v for k, v in shown.items() if k != "price_history"}  # the API's JSON
    assert added["aliases"] == ["claude-opus-4-1-20250805"] and added["prices"]["cache_write"] == "18.75"
    assert run(gateway, "llms", "alias", "claude-opus-4-1", "opus").json()["aliases"] == [
        "claude-opus-4-1-20250805",
        "opus",
    ]
    listed = {m["name"]: m for m in run(gateway, "llms", "list").json()["models"]}
    assert listed["claude-opus-4-1"]["aliases"] == ["claude-opus-4-1-20250805", "opus"]

    bad = run(gateway, "llms", "add", "z", "--provider", "openai", "--input", "x", "--output", "1",
              "--context-window", "10", "--max-output", "5")  # fmt: skip
    assert bad.code != 0 and bad.out == "" and bad.err.count("\n") == 1 and "--input" in bad.err
    taken = run(gateway, "llms", "alias", "gpt-4o", "opus")
    assert taken.code != 0 and "--alias" in taken.err and "opus" in taken.err
    assert await gateway.scalar("SELECT COUNT(*) FROM llms WHERE name = 'z'") == 0


def counts(report: dict[str, Any]) -> tuple[int, int, int, int]:
    return report["added"], report["repriced"], report["unchanged"], report["skipped"]


async def test_price_map_import_dry_run_then_new_versions_never_rewriting_charged_history(
    gateway: Gateway,
) -> None:
    key = await seed_key(gateway)
    # A call charged at deepseek-chat's seeded prices (0.28 in, 0.42 out) before the import.
    await chat(gateway, key, "hi", model="deepseek-chat")
    charged = await gateway.rows("SELECT price_version, cost_nano FROM usage_logs")
    assert charged == [(1, round_to_nano((12 * Decimal("0.28") + 8 * Decimal("0.42")) / M))]
    before = await gateway.rows("SELECT * FROM llm_price_versions ORDER BY id")

    dry = run(gateway, "llms", "import", str(FIXTURE), "--dry-run").json()
    assert dry["dry_run"] is True and counts(dry) == (2, 1, 3, 1)
    entries = {e["key"]: e for e in dry["entries"]}
    assert entries["claude-sonnet-4-5"]["action"] == "add"
    assert entries["gemini/gemini-2.5-pro"]["catalog_name"] == "gemini-2.5-pro"
    deepseek = entries["deepseek/deepseek-chat"]
    assert deepseek["action"] == "reprice" and deepseek["price_version"] is None
    assert {(c["field"], c["current"], c["proposed"]) for c in deepseek["changes"]} == {
        ("input", "0.28", "0.27"),
        ("cached_input", "0.028", "0.07"),
        ("output", "0.42", "1.1"),
    }
    assert entries["text-embedding-3-small"]["action"] == "unchanged"  # seeded as an embedding model
    assert entries["bedrock/anthropic.claude-3-haiku-20240307-v1:0"]["action"] == "skip"
    assert entries["gpt-4o"]["action"] == "unchanged"
    assert await gateway.rows("SELECT * FROM llm_price_versions ORDER BY id") == before  # nothing written
    assert await gateway.scalar("SELECT COUNT(*) FROM llms WHERE name = 'claude-sonnet-4-5'") == 0

    # The admin route runs the same service function on the JSON body, and records this time.
    response = await api(gateway, "POST", "/llms/import", content=FIXTURE.read_bytes())
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["dry_run"] is False and counts(done) == counts(dry)
    assert [(e["key"], e["action"], e["changes"]) for e in done["entries"]] == [
        (e["key"], e["action"], e["changes"]) for e in dry["entries"]
    ]
    versions = await gateway.rows(
        "SELECT v.version, v.input_price, v.output_price "
        "FROM llm_price_versions v JOIN llms l ON l.id = v.llm_id "
        "WHERE l.name = 'deepseek-chat' ORDER BY v.version"
    )
    assert [(v, Decimal(i), Decimal(o)) for v, i, o in versions] == [
        (1, Decimal("0.28"), Decimal("0.42")),
        (2, Decimal("0.27"), Decimal("1.1")),
    ]
    assert await gateway.rows("SELECT price_version, cost_nano FROM usage_logs") == charged  # history kept
    sonnet = (await api(gateway, "GET", "/llms/claude-sonnet-4-5")).json()
    assert (
        sonnet["prices"]["long_context_threshold"] == 200_000
        and sonnet["prices"]["long_cache_write"] == "7.5"
    )
    assert (sonnet["context_window"], sonnet["max_output_tokens"]) == (1_000_000, 64_000)

    # The next call is priced at the new version; an imported model is served at once.
    await chat(gateway, key, "hi", model="deepseek-chat")
    await chat(gateway, key, "hi", model="gemini-2.5-pro")
    rows = await gateway.rows("SELECT model, price_version, cost_nano FROM usage_logs ORDER BY created_at")
    assert rows[1] == ("deepseek-chat", 2, round_to_nano((12 * Decimal("0.27") + 8 * Decimal("1.1")) / M))
    assert rows[2] == ("gemini-2.5-pro", 1, round_to_nano((12 * Decimal("1.25") + 8 * Decimal("10")) / M))

    # The round trip: importing the same map again changes nothing.
    again = run(gateway, "llms", "import", str(FIXTURE)).json()
    assert counts(again) == (0, 0, 6, 1)
    assert {e["action"] for e in again["entries"]} == {"unchanged", "skip"}


async def test_a_malformed_price_map_is_refused_and_changes_nothing(gateway: Gateway, tmp_path: Path) -> None:
    bad = tmp_path / "prices.json"
    bad.write_text(
        json.dumps({"m": {"mode": "chat", "litellm_provider": "openai", "input_cost_per_token": "1"}})
    )
    result = run(gateway, "llms", "import", str(bad))
    assert result.code != 0 and result.out == "" and "m.input_cost_per_token" in result.err
    error = error_of(await api(gateway, "POST", "/llms/import", content=bad.read_bytes()), 400)
    assert error["code"] == "invalid_price_map" and "m.input_cost_per_token" in error["message"].lower()
    # Not a JSON object at all: refused before any service sees it, like every admin body.
    error_of(await api(gateway, "POST", "/llms/import", content=b"[1]"), 400)
    missing = run(gateway, "llms", "import", str(tmp_path / "nope.json"))
    assert missing.code != 0 and "FILE" in missing.err
