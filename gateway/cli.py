"""`synapgate`: serve the gateway, migrate, and the admin operations for scripting.

Each admin command prints one JSON object on success. Bad input prints one line on stderr
(`synapgate: error: …`), exits non-zero and changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from config import PROVIDERS, Settings, SettingsError, load_settings

MAX_RATE = Decimal(10**9)  # NUMERIC(18, 9) holds 9 digits before the point
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class CliError(Exception):
    """A one-line error for the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an id: {value!r}") from None


def _usd(value: str) -> int:
    from pricing.money import MoneyError, parse_usd

    try:
        amount = parse_usd(value)
    except MoneyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if amount <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive amount: {value!r}")
    return amount


def _rate(value: str) -> Decimal:
    """A price in USD per 1M tokens, as the catalog's NUMERIC(18, 9) columns can hold it exactly."""
    try:
        rate = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal price: {value!r}") from None
    if not rate.is_finite() or rate < 0:
        raise argparse.ArgumentTypeError(f"a price must be zero or more: {value!r}")
    if rate >= MAX_RATE:
        raise argparse.ArgumentTypeError(f"a price must be below {MAX_RATE} USD per 1M tokens: {value!r}")
    if rate != rate.quantize(Decimal("1e-9")):
        raise argparse.ArgumentTypeError(f"a price has at most 9 decimal places: {value!r}")
    return rate


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {value!r}")
    return number


def _email(value: str) -> str:
    if not EMAIL.match(value) or len(value) > 320:
        raise argparse.ArgumentTypeError(f"not an email address: {value!r}")
    return value.lower()


def _aware_datetime(value: str) -> datetime:
    """An ISO 8601 time with its zone (a naive time would be a guess), as UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a time zone, e.g. 2026-11-01T00:00:00Z: {value!r}")
    return moment.astimezone(UTC)


def _page_size(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 1000: {value!r}")
    return int(value)


def _offset(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more: {value!r}")
    return int(value)


def _out(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, default=str))


def _out_struct(obj: Any) -> None:
    """A response shape of the admin API, printed exactly as the API answers it."""
    import msgspec

    _out(msgspec.to_builtins(obj))


@asynccontextmanager
async def _storage(settings: Settings) -> Any:
    """Engine and ledger for one CLI command (the same ledger kind the gateway uses)."""
    from redis.asyncio import Redis

    from storage.db import create_engine
    from storage.billing.ledger.redis import RedisLedger
    from storage.billing.ledger.sql import SqlLedger

    engine = create_engine(settings.database_url)
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    ledger: Any = (
        RedisLedger(redis, engine, settings.reservation_ttl_seconds)
        if redis is not None
        else SqlLedger(engine, settings.reservation_ttl_seconds)
    )
    try:
        yield engine, ledger, redis
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


async def _require_user(engine: Any, user_id: uuid.UUID) -> None:
    from storage.accounts.users import user_exists

    if not await user_exists(engine, user_id):
        raise CliError(f"no user with id {user_id}")


# -- commands ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from migrations.runner import upgrade

    if settings.is_sqlite:
        upgrade(settings.database_url)  # the embedded default needs no separate set-up step
        if args.workers > 1:
            raise CliError("SQLite serves one worker; use PostgreSQL (SYNAPGATE_DATABASE_URL) for more")
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    from migrations.runner import upgrade

    upgrade(settings.database_url)
    _out({"migrated": True, "database": settings.database_url.split("://", 1)[0]})


async def cmd_users_create(args: argparse.Namespace, settings: Settings) -> None:
    from storage.billing.ledger.base import HotMove
    from storage.billing.ledger.entries import post_entry
    from storage.accounts.users import DuplicateUser, create_user

    async with _storage(settings) as (engine, ledger, _):
        posted = None
        try:
            async with engine.begin() as conn:  # the user and their first credit: both or neither
                user = await create_user(conn, args.email, name=args.name, workspace_name=args.workspace)
                if args.credits_usd:
                    posted = await post_entry(
                        conn,
                        user_id=user.user_id,
                        type="credit",
                        amount_nano=args.credits_usd,
                        idempotency_key=f"credit:signup:{user.user_id}",
                        description="initial credits",
                    )
        except DuplicateUser:
            raise CliError(f"a user with email {args.email} exists already") from None
        balance = 0
        if posted is not None:
            await ledger.after_commit([HotMove(user.user_id, None, args.credits_usd, posted.version)])
            balance = posted.balance_nano
    from pricing.money import format_usd

    _out(
        {
            "user_id": user.user_id,
            "email": user.email,
            "workspace_id": user.workspace_id,
            "workspace_name": user.workspace_name,
            "balance_usd": format_usd(balance),
        }
    )


async def cmd_users_list(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.api.admin.accounts import UserPage, user_out
    from storage.admin import list_users

    async with _storage(settings) as (engine, _ledger, _), engine.connect() as conn:
        page = await list_users(
            conn, email=args.email, status=args.status, limit=args.limit, offset=args.offset
        )
    _out_struct(
        UserPage(
            data=[user_out(u) for u in page.items],
            total=page.total,
            limit=args.limit,
            offset=args.offset,
            has_more=args.offset + len(page.items) < page.total,
        )
    )


async def cmd_users_show(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.api.admin.accounts import user_detail_out
    from storage.admin import user_detail

    async with _storage(settings) as (engine, _ledger, _), engine.connect() as conn:
        detail = await user_detail(conn, args.user)
    if detail is None:
        raise CliError(f"no user with id {args.user}")
    _out_struct(user_detail_out(detail))


async def cmd_invoices_create(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.api.admin.billing import invoice_out
    from storage.admin import UnknownUser
    from storage.billing.invoices import InvoiceOverlap, create_invoice

    if args.period_end <= args.period_start:
        raise CliError("--period-end must be after --period-start")
    if args.period_end > datetime.now(UTC):
        raise CliError("--period-end is in the future: a period can be invoiced once it has ended")
    async with _storage(settings) as (engine, _ledger, _):
        try:
            async with engine.begin() as conn:
                invoice = await create_invoice(conn, args.user, args.period_start, args.period_end)
        except UnknownUser:
            raise CliError(f"no user with id {args.user}") from None
        except InvoiceOverlap as exc:
            raise CliError(
                f"the period overlaps invoice {exc.invoice_id} ({exc.period_start.isoformat()} to "
                f"{exc.period_end.isoformat()}); a period is invoiced once"
            ) from None
    _out_struct(invoice_out(invoice))


async def cmd_invoices_show(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.api.admin.billing import invoice_out
    from storage.billing.invoices import get_invoice

    async with _storage(settings) as (engine, _ledger, _), engine.connect() as conn:
        invoice = await get_invoice(conn, args.invoice)
    if invoice is None:
        raise CliError(f"no invoice with id {args.invoice}")
    _out_struct(invoice_out(invoice))


async def cmd_invoices_list(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.api.admin.billing import InvoicePage, invoice_out
    from storage.billing.invoices import list_invoices

    async with _storage(settings) as (engine, _ledger, _):
        if args.user is not None:
            await _require_user(engine, args.user)
        async with engine.connect() as conn:
            page = await list_invoices(conn, user_id=args.user, limit=args.limit, offset=args.offset)
    _out_struct(
        InvoicePage(
            data=[invoice_out(i) for i in page.items],
            total=page.total,
            limit=args.limit,
            offset=args.offset,
            has_more=args.offset + len(page.items) < page.total,
        )
    )


async def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts.keys import create_key
    from storage.accounts.users import default_workspace

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    async with _storage(settings) as (engine, _ledger, _):
        await _require_user(engine, args.user)
        async with engine.begin() as conn:
            workspace = args.workspace or await default_workspace(conn, args.user)
            key_id, plaintext = await create_key(
                conn, args.user, workspace_id=workspace, name=args.name, allowed_models=models
            )
    _out(
        {
            "key_id": key_id,
            "key": plaintext,
            "user_id": args.user,
            "workspace_id": workspace,
            "name": args.name,
            "allowed_models": models,
            "note": "the key is shown only once; store it now",
        }
    )


async def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts.keys import revoke_key

    async with _storage(settings) as (engine, _ledger, _), engine.begin() as conn:
        if not await revoke_key(conn, args.key_id):
            raise CliError(f"no active key with id {args.key_id}")
    _out({"key_id": args.key_id, "status": "revoked"})


async def cmd_credits_add(args: argparse.Namespace, settings: Settings) -> None:
    from pricing.money import format_usd
    from storage.billing.credits import add_credits

    key = args.idempotency_key or f"cli:{uuid.uuid4()}"
    async with _storage(settings) as (engine, ledger, _):
        await _require_user(engine, args.user)
        posted = await add_credits(
            engine, ledger, args.user, args.amount_usd, key, description=args.description
        )
    _out(
        {
            "user_id": args.user,
            "amount_usd": format_usd(args.amount_usd),
            "balance_usd": format_usd(posted.balance_nano),
            "idempotency_key": key,
            "replayed": not posted.created,
        }
    )


async def cmd_credits_balance(args: argparse.Namespace, settings: Settings) -> None:
    from pricing.money import format_usd
    from storage.billing.ledger.entries import account_state

    async with _storage(settings) as (engine, ledger, _):
        await _require_user(engine, args.user)
        async with engine.connect() as conn:
            balance, _version = await account_state(conn, args.user)
        available = await ledger.available(args.user)
    _out({"user_id": args.user, "balance_usd": format_usd(balance), "available_usd": format_usd(available)})


async def cmd_llms_list(args: argparse.Namespace, settings: Settings) -> None:
    from storage.catalog.repository import load_catalog

    async with _storage(settings) as (engine, _ledger, _), engine.connect() as conn:
        catalog = await load_catalog(conn)
    models = []
    for m in sorted(catalog.all() if args.all else catalog.active(), key=lambda m: m.id):
        base = m.pricing.base
        models.append(
            {
                "name": m.name,
                "provider": m.provider,
                "upstream_model": m.upstream_model,
                "active": m.is_active,
                "price_version": m.price_version,
                "input": str(base.input),
                "cached_input": str(base.cached_input_rate),
                "cache_write": str(base.cache_write_rate),
                "output": str(base.output),
                "context_window": m.context_window,
                "max_output_tokens": m.max_output_tokens,
            }
        )
    _out({"models": models})


async def cmd_llms_set_price(args: argparse.Namespace, settings: Settings) -> None:
    from storage.catalog.repository import PriceChange, UnknownModel, set_price

    change = PriceChange(
        input_price=args.input,
        output_price=args.output,
        cached_input_price=args.cached_input,
        cache_write_price=args.cache_write,
        long_context_threshold=args.long_threshold,
        long_input_price=args.long_input,
        long_cached_input_price=args.long_cached_input,
        long_cache_write_price=args.long_cache_write,
        long_output_price=args.long_output,
    )
    async with _storage(settings) as (engine, _ledger, _):
        try:
            async with engine.begin() as conn:
                version = await set_price(conn, args.name, change)
        except UnknownModel:
            raise CliError(f"no model named {args.name!r} in the catalog") from None
    _out({"name": args.name, "price_version": version, "input": str(args.input), "output": str(args.output)})


async def cmd_credentials_set(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts.credentials import cipher_for, set_credential

    if settings.secret_key is None:
        raise CliError("SYNAPGATE_SECRET_KEY is not set: it is needed to encrypt stored provider keys")
    key = sys.stdin.readline().strip()
    if not key:
        raise CliError("no key on standard input (pipe the provider key in, e.g. `... < keyfile`)")
    if any(c.isspace() for c in key):
        raise CliError("the key on standard input contains spaces; give only the key")
    async with _storage(settings) as (engine, _ledger, _):
        await _require_user(engine, args.user)
        async with engine.begin() as conn:
            last4 = await set_credential(conn, cipher_for(settings.secret_key.get_secret_value()), args.user,
                                         args.provider, key)  # fmt: skip
    _out({"user_id": args.user, "provider": args.provider, "key_last4": last4})


async def cmd_ledger_reconcile(args: argparse.Namespace, settings: Settings) -> None:
    from storage.billing.reconcile import reconcile

    async with _storage(settings) as (engine, ledger, _):
        report = await reconcile(engine, ledger, fix=args.fix)
    _out(report)
    if report["mismatches"] and not args.fix:
        raise SystemExit(1)


def cmd_mock_upstream(args: argparse.Namespace, settings: Settings | None) -> None:
    from gateway.mock_upstream import MockConfig, serve_mock

    serve_mock(args.host, args.port, MockConfig(latency_ms=args.latency_ms))


# -- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="synapgate", description="SynapGate: the metered OpenAI-compatible LLM gateway.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser(
        "serve", help="serve the gateway (migrates the embedded SQLite database first)"
    )
    serve.add_argument("--host", help="address to bind (default SYNAPGATE_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default SYNAPGATE_PORT, 8080)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (PostgreSQL only for more than 1)"
    )
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser(
        "migrate", help="upgrade the database schema to the latest version (idempotent)"
    )
    migrate.set_defaults(run=cmd_migrate)

    users = commands.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    create = users.add_parser("create", help="create a user with their own workspace")
    create.add_argument("--email", required=True, type=_email)
    create.add_argument("--name")
    create.add_argument("--workspace", help="name of the user's workspace")
    create.add_argument("--credits-usd", type=_usd, help="initial credit, a decimal USD amount")
    create.set_defaults(run=cmd_users_create)
    ulist = users.add_parser("list", help="list users, oldest first (a stable order for paging)")
    ulist.add_argument("--limit", type=_page_size, default=100, help="page size, 1 to 1000 (default 100)")
    ulist.add_argument("--offset", type=_offset, default=0, help="users to skip (default 0)")
    ulist.add_argument("--email", type=_email, help="only the user with this email")
    ulist.add_argument("--status", choices=("active", "disabled"))
    ulist.set_defaults(run=cmd_users_list)
    show = users.add_parser("show", help="a user with their workspaces, balance and number of active keys")
    show.add_argument("--user", required=True, type=_uuid)
    show.set_defaults(run=cmd_users_show)

    keys = commands.add_parser("keys", help="manage gateway API keys").add_subparsers(
        dest="action", required=True
    )
    key_create = keys.add_parser("create", help="create a key (its plaintext is printed once, here only)")
    key_create.add_argument("--user", required=True, type=_uuid)
    key_create.add_argument("--name")
    key_create.add_argument(
        "--workspace", type=_uuid, help="workspace the key bills to (default: the user's own)"
    )
    key_create.add_argument("--models", help="comma-separated allow-list of model names")
    key_create.set_defaults(run=cmd_keys_create)
    revoke = keys.add_parser("revoke", help="revoke a key (effective within 5 seconds)")
    revoke.add_argument("--key-id", required=True, type=_uuid)
    revoke.set_defaults(run=cmd_keys_revoke)

    credits = commands.add_parser("credits", help="prepaid credits").add_subparsers(
        dest="action", required=True
    )
    add = credits.add_parser("add", help="add credits to a user's balance")
    add.add_argument("--user", required=True, type=_uuid)
    add.add_argument("--amount-usd", required=True, type=_usd, help="decimal USD amount, e.g. 10.50")
    add.add_argument("--idempotency-key", help="replaying the same key adds nothing")
    add.add_argument("--description")
    add.set_defaults(run=cmd_credits_add)
    balance = credits.add_parser("balance", help="a user's balance and what is available after reservations")
    balance.add_argument("--user", required=True, type=_uuid)
    balance.set_defaults(run=cmd_credits_balance)

    llms = commands.add_parser("llms", help="the model catalog").add_subparsers(dest="action", required=True)
    llist = llms.add_parser("list", help="list the catalog with current prices (USD per 1M tokens)")
    llist.add_argument("--all", action="store_true", help="include inactive models")
    llist.set_defaults(run=cmd_llms_list)
    price = llms.add_parser("set-price", help="record a new price version (past usage keeps its prices)")
    price.add_argument("name")
    price.add_argument("--input", required=True, type=_rate, help="USD per 1M input tokens")
    price.add_argument("--output", required=True, type=_rate, help="USD per 1M output tokens")
    price.add_argument("--cached-input", type=_rate)
    price.add_argument("--cache-write", type=_rate)
    price.add_argument(
        "--long-threshold", type=_positive_int, help="prompt tokens above which the long-context prices apply"
    )
    price.add_argument("--long-input", type=_rate)
    price.add_argument("--long-cached-input", type=_rate)
    price.add_argument("--long-cache-write", type=_rate)
    price.add_argument("--long-output", type=_rate)
    price.set_defaults(run=cmd_llms_set_price)

    creds = commands.add_parser("credentials", help="users' own provider keys (BYOK)").add_subparsers(
        dest="action", required=True
    )
    cset = creds.add_parser("set", help="store a user's provider key, read from standard input, encrypted")
    cset.add_argument("--user", required=True, type=_uuid)
    cset.add_argument("--provider", required=True, choices=PROVIDERS)
    cset.set_defaults(run=cmd_credentials_set)

    invoices = commands.add_parser("invoices", help="close billing periods into invoices").add_subparsers(
        dest="action", required=True
    )
    icreate = invoices.add_parser(
        "create",
        help="invoice a user's ended period [start, end): usage per model, fees, credits, refunds; "
        "refused if it overlaps one of their invoices",
    )
    icreate.add_argument("--user", required=True, type=_uuid)
    icreate.add_argument(
        "--period-start",
        required=True,
        type=_aware_datetime,
        help="ISO 8601 with a zone, e.g. 2026-11-01T00:00:00Z",
    )
    icreate.add_argument(
        "--period-end",
        required=True,
        type=_aware_datetime,
        help="exclusive; ISO 8601 with a zone, in the past",
    )
    icreate.set_defaults(run=cmd_invoices_create)
    ishow = invoices.add_parser("show", help="an invoice with its lines, totals and balances")
    ishow.add_argument("--invoice", required=True, type=_uuid)
    ishow.set_defaults(run=cmd_invoices_show)
    ilist = invoices.add_parser("list", help="invoices by period, oldest first")
    ilist.add_argument("--user", type=_uuid, help="only this user's invoices")
    ilist.add_argument("--limit", type=_page_size, default=100, help="page size, 1 to 1000 (default 100)")
    ilist.add_argument("--offset", type=_offset, default=0, help="invoices to skip (default 0)")
    ilist.set_defaults(run=cmd_invoices_list)

    ledger = commands.add_parser("ledger", help="the credit ledger").add_subparsers(
        dest="action", required=True
    )
    rec = ledger.add_parser(
        "reconcile", help="prove ledger, accounts and the Redis copy agree to the nano-USD"
    )
    rec.add_argument("--fix", action="store_true", help="rebuild the Redis copy of every mismatched balance")
    rec.set_defaults(run=cmd_ledger_reconcile)

    mock = commands.add_parser(
        "mock-upstream", help="run the mock provider (OpenAI, Anthropic, Gemini formats)"
    )
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=9100)
    mock.add_argument("--latency-ms", type=float, default=0.0)
    mock.set_defaults(run=cmd_mock_upstream, needs_settings=False)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[..., Any] = args.run
    try:
        settings = None if getattr(args, "needs_settings", True) is False else load_settings()
        result = run(args, settings)
        if isinstance(result, Awaitable):
            asyncio.run(_awaited(result))
    except (SettingsError, CliError) as exc:
        sys.stderr.write(f"synapgate: error: {exc}\n")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:  # a database that is down, a migration that fails: one line, not a traceback
        sys.stderr.write(
            f"synapgate: error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n"
        )
        raise SystemExit(1) from None


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


if __name__ == "__main__":
    main()
