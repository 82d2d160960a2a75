"""`synapgate`: serve the gateway, migrate, and the admin operations for scripting.

Each admin command prints one JSON object on success (the same JSON the admin API answers for the same
object). Bad input prints one line on stderr (`synapgate: error: …`), exits non-zero and changes nothing.
The rules are the storage services' (the same the admin API applies); this module parses arguments and
maps the services' domain errors to its one line (`CLI_FLAGS`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from config import PROVIDERS, Settings, SettingsError, load_settings


class CliError(Exception):
    """A one-line error for the user."""


# The CLI's one mapping of the services' domain errors: the input a refusal names (`param`, as the API
# spells it) → the flag that gave it here. The message itself is the service's.
CLI_FLAGS = {
    "user_id": "--user",
    "workspace_id": "--workspace",
    "allowed_models": "--models",
    "email": "--email",
    "credits_usd": "--credits-usd",
    "amount_usd": "--amount-usd",
    "idempotency_key": "--idempotency-key",
    "key_id": "--key-id",
    "period_start": "--period-start",
    "period_end": "--period-end",
    "limit": "--limit",
    "low_balance_usd": "--low-balance-usd",
    "offset": "--offset",
    "provider": "--provider",
    "api_key": "standard input",
    "name": "name",
    "input_price": "--input",
    "output_price": "--output",
    "cached_input_price": "--cached-input",
    "cache_write_price": "--cache-write",
    "long_context_threshold": "--long-threshold",
    "long_input_price": "--long-input",
    "long_cached_input_price": "--long-cached-input",
    "long_cache_write_price": "--long-cache-write",
    "long_output_price": "--long-output",
}


def cli_error_line(exc: Exception) -> str:
    """The one line a domain error prints as (without the `synapgate: error: ` prefix)."""
    from storage.errors import DomainError

    if isinstance(exc, DomainError) and exc.param is not None:
        return f"{CLI_FLAGS.get(exc.param, exc.param)}: {exc.message}"
    return str(exc)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an id: {value!r}") from None


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None


def _port(value: str) -> int:
    port = _int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 1 to 65535: {value!r}")
    return port


def _workers(value: str) -> int:
    workers = _int(value)
    if not 1 <= workers <= 64:
        raise argparse.ArgumentTypeError(f"from 1 to 64 worker processes: {value!r}")
    return workers


def _aware_datetime(value: str) -> datetime:
    """An ISO 8601 time with its zone (a naive time would be a guess), as UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a time zone, e.g. 2026-11-01T00:00:00Z: {value!r}")
    return moment.astimezone(UTC)


def _out(obj: Any) -> None:
    """One JSON object on stdout, encoded as the admin API encodes its answers (msgspec)."""
    import msgspec

    from storage.views import to_dict

    sys.stdout.write(msgspec.json.encode(to_dict(obj)).decode() + "\n")


def _page(page: Any, item: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    from storage.views import to_dict

    return {
        "data": [item(x) if item else to_dict(x) for x in page.items],
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
        "has_more": page.has_more,
    }


# -- the database --------------------------------------------------------------------------------


def _check_sqlite_file(settings: Settings) -> None:
    """A SQLite database that is not there is not created by an admin command: it says how to make it."""
    from sqlalchemy.engine import make_url

    database = make_url(settings.database_url).database
    if settings.is_sqlite and database and database != ":memory:" and not Path(database).exists():
        raise CliError(
            f"the database {database} does not exist (from {Path.cwd()}): run `synapgate migrate` first, "
            "or set SYNAPGATE_DATABASE_URL to the gateway's database"
        )


def database_problem(exc: BaseException, settings: Settings) -> str | None:
    """What is wrong with the database, in words, for an error the driver raised (None: not a DB error)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError, IntegrityError

    url = make_url(settings.database_url)
    where = url.database if settings.is_sqlite else f"{url.database} on {url.host}:{url.port or 5432}"
    if isinstance(exc, IntegrityError):
        return (
            "the database refused the change: it names a row that does not exist or repeats a unique value "
            "(was something deleted meanwhile?); nothing was changed"
        )
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text = detail[0] if detail else type(exc).__name__
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return f"the database {where} is not migrated: run `synapgate migrate` first"
    if "database" in text and "does not exist" in text:
        return f"the database {where} does not exist: create it, then run `synapgate migrate`"
    if isinstance(exc, DBAPIError | OSError | ConnectionError | TimeoutError):
        return f"cannot use the database {where}: {text}"
    return None


@dataclass
class Storage:
    engine: Any
    ledger: Any


@asynccontextmanager
async def _storage(settings: Settings) -> AsyncIterator[Storage]:
    """Engine and ledger for one CLI command (the ledger the gateway builds, from the same settings)."""
    from storage.billing.ledger.factory import build_ledger, redis_for
    from storage.db import create_engine

    _check_sqlite_file(settings)
    engine = create_engine(settings.database_url)
    redis = redis_for(settings)
    try:
        yield Storage(engine, build_ledger(settings, engine, redis))
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


# -- commands ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from migrations.runner import upgrade

    workers = args.workers or settings.workers
    if settings.is_sqlite:
        if workers > 1:
            raise CliError("SQLite serves one worker; use PostgreSQL (SYNAPGATE_DATABASE_URL) for more")
        upgrade(settings.database_url)  # the embedded default needs no separate set-up step
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=workers,
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
    from storage.accounts import service

    async with _storage(settings) as st:
        user = await service.create_user(
            st.engine,
            st.ledger,
            args.email,
            name=args.name,
            workspace_name=args.workspace,
            credits_usd=args.credits_usd,
        )
    _out(user)


async def cmd_users_list(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts import service
    from storage.paging import PageRequest

    page = PageRequest(args.limit, args.offset)
    async with _storage(settings) as st, st.engine.connect() as conn:
        found = await service.list_users(conn, page, email=args.email, status=args.status)
    _out(_page(found))


async def cmd_users_show(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts import service

    async with _storage(settings) as st, st.engine.connect() as conn:
        _out(await service.user_detail(conn, args.user))


async def cmd_invoices_create(args: argparse.Namespace, settings: Settings) -> None:
    from storage.billing import service
    from storage.billing.invoices import invoice_to_dict

    async with _storage(settings) as st:
        invoice = await service.create_invoice(st.engine, args.user, args.period_start, args.period_end)
    _out(invoice_to_dict(invoice))


async def cmd_invoices_show(args: argparse.Namespace, settings: Settings) -> None:
    from storage.billing import service
    from storage.billing.invoices import invoice_to_dict

    async with _storage(settings) as st, st.engine.connect() as conn:
        _out(invoice_to_dict(await service.get_invoice(conn, args.invoice)))


async def cmd_invoices_list(args: argparse.Namespace, settings: Settings) -> None:
    from storage.billing import service
    from storage.billing.invoices import invoice_to_dict
    from storage.paging import PageRequest

    page = PageRequest(args.limit, args.offset)
    async with _storage(settings) as st, st.engine.connect() as conn:
        found = await service.list_invoices(conn, page, user_id=args.user)
    _out(_page(found, invoice_to_dict))


async def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts import service

    models = args.models.split(",") if args.models is not None else None
    async with _storage(settings) as st, st.engine.begin() as conn:
        key = await service.create_key(
            conn, args.user, workspace_id=args.workspace, name=args.name, allowed_models=models
        )
    _out(key)


async def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts import service

    async with _storage(settings) as st, st.engine.begin() as conn:
        _out(await service.revoke_key(conn, args.key_id))


async def cmd_credits_add(args: argparse.Namespace, settings: Settings) -> None:
    from storage.billing import service

    key = args.idempotency_key if args.idempotency_key is not None else f"cli:{uuid.uuid4()}"
    async with _storage(settings) as st:
        top_up = await service.add_credits(
            st.engine, st.ledger, args.user, args.amount_usd, key, description=args.description
        )
    _out(top_up)


async def cmd_credits_balance(args: argparse.Namespace, settings: Settings) -> None:
    from storage.billing import service

    async with _storage(settings) as st:
        _out(await service.balance(st.engine, st.ledger, args.user))


async def cmd_llms_list(args: argparse.Namespace, settings: Settings) -> None:
    from storage.catalog.repository import load_catalog

    async with _storage(settings) as st, st.engine.connect() as conn:
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


_PRICE_FLAGS = {
    "cached_input_price": "cached_input",
    "cache_write_price": "cache_write",
    "long_input_price": "long_input",
    "long_cached_input_price": "long_cached_input",
    "long_cache_write_price": "long_cache_write",
    "long_output_price": "long_output",
}


async def cmd_llms_set_price(args: argparse.Namespace, settings: Settings) -> None:
    from storage.catalog import service

    optional: dict[str, Any] = {
        field: service.parse_rate(getattr(args, attr), field)
        for field, attr in _PRICE_FLAGS.items()
        if getattr(args, attr) is not None
    }
    if args.long_threshold is not None:
        optional["long_context_threshold"] = args.long_threshold
    change = service.PriceChange(
        input_price=service.parse_rate(args.input, "input_price"),
        output_price=service.parse_rate(args.output, "output_price"),
        **optional,
    )
    async with _storage(settings) as st, st.engine.begin() as conn:
        version = await service.set_price(conn, args.name, change)
    _out({"name": args.name, "price_version": version, "input": str(change.input_price),
          "output": str(change.output_price)})  # fmt: skip


async def cmd_credentials_set(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts import service

    secret = settings.secret_key.get_secret_value() if settings.secret_key is not None else None
    key = sys.stdin.readline().strip()
    async with _storage(settings) as st, st.engine.begin() as conn:
        stored = await service.set_provider_key(conn, secret, args.user, args.provider, key)
    _out({"user_id": stored.user_id, "provider": stored.provider, "key_last4": stored.key_last4})


async def cmd_ledger_reconcile(args: argparse.Namespace, settings: Settings) -> None:
    from storage.billing.reconcile import reconcile

    async with _storage(settings) as st:
        report = await reconcile(st.engine, st.ledger, fix=args.fix)
    _out(report.to_dict())
    if report.mismatches and not args.fix:
        raise SystemExit(1)


# -- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="synapgate", description="SynapGate: the metered OpenAI-compatible LLM gateway.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser(
        "serve", help="serve the gateway (migrates the embedded SQLite database first)"
    )
    serve.add_argument("--host", help="address to bind (default SYNAPGATE_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port, 1 to 65535 (default SYNAPGATE_PORT, 8080)")
    serve.add_argument(
        "--workers",
        type=_workers,
        help="worker processes, 1 to 64 (default SYNAPGATE_WORKERS, 1; PostgreSQL only for more than 1)",
    )
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser(
        "migrate", help="upgrade the database schema to the latest version (idempotent)"
    )
    migrate.set_defaults(run=cmd_migrate)

    users = commands.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    create = users.add_parser("create", help="create a user with their own workspace")
    create.add_argument("--email", required=True)
    create.add_argument("--name")
    create.add_argument("--workspace", help="name of the user's workspace")
    create.add_argument("--credits-usd", help="initial credit, a decimal USD amount")
    create.set_defaults(run=cmd_users_create)
    ulist = users.add_parser("list", help="list users, oldest first (a stable order for paging)")
    ulist.add_argument("--limit", type=_int, default=100, help="page size, 1 to 1000 (default 100)")
    ulist.add_argument("--offset", type=_int, default=0, help="users to skip (default 0)")
    ulist.add_argument("--email", help="only the user with this email")
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
    add.add_argument("--amount-usd", required=True, help="decimal USD amount, e.g. 10.50")
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
    price.add_argument("--input", required=True, help="USD per 1M input tokens")
    price.add_argument("--output", required=True, help="USD per 1M output tokens")
    price.add_argument("--cached-input")
    price.add_argument("--cache-write")
    price.add_argument(
        "--long-threshold", type=_int, help="prompt tokens above which the long-context prices apply"
    )
    price.add_argument("--long-input")
    price.add_argument("--long-cached-input")
    price.add_argument("--long-cache-write")
    price.add_argument("--long-output")
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
    ilist.add_argument("--limit", type=_int, default=100, help="page size, 1 to 1000 (default 100)")
    ilist.add_argument("--offset", type=_int, default=0, help="invoices to skip (default 0)")
    ilist.set_defaults(run=cmd_invoices_list)

    ledger = commands.add_parser("ledger", help="the credit ledger").add_subparsers(
        dest="action", required=True
    )
    rec = ledger.add_parser(
        "reconcile", help="prove ledger, accounts and the Redis copy agree to the nano-USD"
    )
    rec.add_argument("--fix", action="store_true", help="rebuild the Redis copy of every mismatched balance")
    rec.set_defaults(run=cmd_ledger_reconcile)

    _add_jobs_and_alerts_commands(commands, users)
    return parser


# -- background jobs and alerts (webhooks, issue 12) ------------------------------------------------


def cmd_worker(args: argparse.Namespace, settings: Settings) -> Awaitable[None]:
    """Run the background jobs (webhook delivery, key expiry, …) until SIGINT/SIGTERM."""
    from storage.jobs.runner import run_worker

    _check_sqlite_file(settings)
    return run_worker(settings)


async def cmd_users_alerts(args: argparse.Namespace, settings: Settings) -> None:
    from storage.webhooks import alerts

    threshold = None if args.off else alerts.parse_threshold(args.low_balance_usd)
    async with _storage(settings) as st, st.engine.begin() as conn:
        if args.low_balance_usd is None and not args.off:
            found = await alerts.get_alert_settings(conn, args.user)
        else:
            found = await alerts.set_low_balance_threshold(conn, args.user, threshold)
    _out(found)


def _add_jobs_and_alerts_commands(commands: Any, users: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="run the background jobs: procrastinate on PostgreSQL, in-process on SQLite (until Ctrl-C)",
    )
    worker.set_defaults(run=cmd_worker)
    alerts = users.add_parser(
        "alerts", help="show or set a user's alert thresholds (credits.low webhook events)"
    )
    alerts.add_argument("user", type=_uuid, metavar="ID")
    which = alerts.add_mutually_exclusive_group()
    which.add_argument("--low-balance-usd", help="send credits.low when a call takes the balance under this")
    which.add_argument("--off", action="store_true", help="no credits.low alert for this user")
    alerts.set_defaults(run=cmd_users_alerts)


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command; every failure is one line on stderr and a non-zero exit, never a traceback."""
    from storage.errors import DomainError

    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[..., Any] = args.run
    settings: Settings | None = None
    try:
        settings = load_settings()
        result = run(args, settings)
        if isinstance(result, Awaitable):
            asyncio.run(_awaited(result))
    except (SettingsError, CliError, DomainError) as exc:
        _fail(cli_error_line(exc))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:  # a database that is down or not migrated: one line in words, not a traceback
        problem = database_problem(exc, settings) if settings is not None else None
        text = str(exc).splitlines()[0] if str(exc) else ""
        _fail(problem or f"{type(exc).__name__}: {text}")


def _fail(line: str) -> NoReturn:
    sys.stderr.write(f"synapgate: error: {line}\n")
    raise SystemExit(1) from None


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


if __name__ == "__main__":
    main()
