"""`synapgate`: serve the gateway, migrate, and the admin operations for scripting.

Each admin command prints one JSON object on success (the same JSON the admin API answers for the same
object). Bad input prints one line on stderr (`synapgate: error: …`), exits non-zero and changes nothing.
The rules are the storage services' (the same the admin API applies); this module parses arguments and
maps the services' domain errors to its one line (`CLI_FLAGS`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    "rpm_limit": "--rpm",
    "usage_retention_months": "--retention-months",
    "months_ahead": "--months-ahead",
    "months_back": "--months-back",
    "tpm_limit": "--tpm",
    "budget_usd": "--budget-usd",
    "budget_period": "--budget-period",
    "expires_at": "--expires-at",
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


_CLEAR = "none"  # `--rpm none` clears a limit


def _limit_int(value: str) -> int | None:
    return None if value.lower() == _CLEAR else _int(value)


def _limit_text(value: str) -> str | None:
    return None if value.lower() == _CLEAR else value


def _expiry(value: str) -> datetime | None:
    if value.lower() == _CLEAR:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _limit_flags(parser: argparse.ArgumentParser, *, key: bool) -> None:
    """The limit flags of `keys create/update`, `users update`, `workspaces update` (`none` clears one)."""
    parser.add_argument("--rpm", type=_limit_int, default=argparse.SUPPRESS, help="requests per minute")
    parser.add_argument("--tpm", type=_limit_int, default=argparse.SUPPRESS, help="tokens per minute")
    parser.add_argument(
        "--budget-usd", type=_limit_text, default=argparse.SUPPRESS, help="budget per period, decimal USD"
    )
    parser.add_argument(
        "--budget-period",
        type=_limit_text,
        choices=("day", "week", "month", "total", None),
        default=argparse.SUPPRESS,
        help="calendar period in UTC (default month)",
    )
    if key:
        parser.add_argument(
            "--expires-at", type=_expiry, default=argparse.SUPPRESS, help="ISO 8601 (UTC if no zone)"
        )


def _limit_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The limit flags given, as the service's field names."""
    names = {
        "rpm": "rpm_limit",
        "tpm": "tpm_limit",
        "budget_usd": "budget_usd",
        "budget_period": "budget_period",
        "expires_at": "expires_at",
    }
    return {field: getattr(args, flag) for flag, field in names.items() if hasattr(args, flag)}


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

    from gateway.tagger_process import TaggerProcess

    workers = args.workers or settings.workers
    if settings.is_sqlite:
        if workers > 1:
            raise CliError("SQLite serves one worker; use PostgreSQL (SYNAPGATE_DATABASE_URL) for more")
        from migrations.runner import upgrade  # only here: Alembic is ~8 MB of a one-worker server's memory

        upgrade(settings.database_url)  # the embedded default needs no separate set-up step
    tagger = None
    if not settings.tagger_socket:  # one tagger process for all the workers (they spawn: they inherit env)
        tagger = TaggerProcess(warm=settings.auto_tags)
        tagger.ensure_started()
        os.environ["SYNAPGATE_TAGGER_SOCKET"] = tagger.socket_path  # this process's own app reads it too
    try:
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
    finally:
        if tagger is not None:
            os.environ.pop("SYNAPGATE_TAGGER_SOCKET", None)
            tagger.stop()


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
            conn,
            args.user,
            workspace_id=args.workspace,
            name=args.name,
            allowed_models=models,
            limits=_limit_changes(args),
        )
    _out(key)


async def cmd_keys_update(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts import service

    async with _storage(settings) as st, st.engine.begin() as conn:
        key = await service.update_key_limits(conn, args.key_id, _limit_changes(args))
        _out({"key": key, "limits": await service.limit_usage(conn, st.ledger, "k", args.key_id)})


async def cmd_users_update(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts import service

    async with _storage(settings) as st, st.engine.begin() as conn:
        await service.update_user_limits(conn, args.user_id, _limit_changes(args))
        _out(await service.limit_usage(conn, st.ledger, "u", args.user_id))


async def cmd_workspaces_update(args: argparse.Namespace, settings: Settings) -> None:
    from storage.accounts import service

    async with _storage(settings) as st, st.engine.begin() as conn:
        await service.update_workspace_limits(conn, args.workspace_id, _limit_changes(args))
        _out(await service.limit_usage(conn, st.ledger, "w", args.workspace_id))


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
                "aliases": catalog.aliases_of(m),
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
    from storage.usage.spool import spool_status

    spool = spool_status(settings.spool_dir) if settings.spool_dir is not None else None
    async with _storage(settings) as st:
        report = await reconcile(st.engine, st.ledger, fix=args.fix, spool=spool)
    _out(report.to_dict())
    if (report.mismatches and not args.fix) or (spool is not None and spool.dead_letters):
        raise SystemExit(1)  # a dead letter is a record PostgreSQL refused: an operator must look at it


# -- insights (issue 14) -------------------------------------------------------------------------


def cmd_insights_evaluate(args: argparse.Namespace, settings: Settings) -> None:
    """Score every insight model on its held-out sets (insights.evaluate); exit 1 when a target is missed."""
    from insights import evaluate

    argv = ["--seed", str(args.seed), "--users", str(args.users)]
    argv += [f"--sentiment-set={path}" for path in args.sentiment_set]
    argv += [f"--tagging-set={path}" for path in args.tagging_set]
    argv += ["--development"] if args.development else []
    code = evaluate.main(argv)
    if code:
        raise SystemExit(code)


async def cmd_insights_simulate(args: argparse.Namespace, settings: Settings) -> None:
    """Write a synthetic platform history (users, keys, credits, usage through the recorder, task tags,
    feedback and planted spend spikes), for demos."""
    from storage.errors import InvalidInput
    from storage.insights.simulation import write_simulated_history
    from storage.views import to_dict

    try:
        async with _storage(settings) as st:
            done = await write_simulated_history(
                st.engine,
                st.ledger,
                users=args.users,
                days=args.days,
                seed=args.seed,
                max_per_day=args.max_per_day,
                spikes=args.spikes,
            )
    except InvalidInput as exc:  # this command's inputs are its own flags (--days, --users, --spikes)
        raise CliError(f"--{exc.param}: {exc.message}") from None
    _out(to_dict(done))


async def cmd_insights_run(args: argparse.Namespace, settings: Settings) -> None:
    """Run every insights job now (churn, anomalies with their webhooks, the recommendations snapshot)."""
    from storage.insights.service import run_all
    from storage.views import to_dict

    async with _storage(settings) as st:
        done = await run_all(st.engine)
    _out(to_dict(done))


# -- llms: the model catalog (list, add, alias, set-price, import) ----------------------------------

CLI_FLAGS.update(
    {
        "provider": "--provider",
        "upstream_model": "--upstream",
        "display_name": "--display-name",
        "aliases": "--alias",
        "context_window": "--context-window",
        "max_output_tokens": "--max-output",
        "file": "FILE",
    }
)


def _catalog_line(model: Any) -> str:
    """A catalog model as one JSON line, as the admin API shows it (POST /api/v1/llms)."""
    import msgspec

    from gateway.api.admin.catalog import LlmOut, _llm_fields

    return msgspec.json.encode(LlmOut(**_llm_fields(model))).decode() + "\n"


async def cmd_llms_add(args: argparse.Namespace, settings: Settings) -> None:
    from storage.catalog import service

    def rate(value: str | None, field: str) -> Any:
        return None if value is None else service.parse_rate(value, field)

    new = service.NewModel(
        name=args.name,
        provider=args.provider,
        upstream_model=args.upstream or args.name,
        display_name=args.display_name,
        aliases=tuple(args.alias or ()),
        input_price=service.parse_rate(args.input, "input_price"),
        output_price=service.parse_rate(args.output, "output_price"),
        cached_input_price=rate(args.cached_input, "cached_input_price"),
        cache_write_price=rate(args.cache_write, "cache_write_price"),
        long_context_threshold=args.long_threshold,
        long_input_price=rate(args.long_input, "long_input_price"),
        long_cached_input_price=rate(args.long_cached_input, "long_cached_input_price"),
        long_cache_write_price=rate(args.long_cache_write, "long_cache_write_price"),
        long_output_price=rate(args.long_output, "long_output_price"),
        context_window=args.context_window,
        max_output_tokens=args.max_output,
        supports_vision=args.vision,
        supports_tools=not args.no_tools,
        supports_streaming=not args.no_streaming,
    )
    async with _storage(settings) as st, st.engine.begin() as conn:
        model = await service.add_model(conn, new)
    sys.stdout.write(_catalog_line(model))


async def cmd_llms_alias(args: argparse.Namespace, settings: Settings) -> None:
    from storage.catalog import service

    async with _storage(settings) as st, st.engine.begin() as conn:
        model = await service.add_aliases(conn, args.name, args.alias)
    sys.stdout.write(_catalog_line(model))


async def cmd_llms_import(args: argparse.Namespace, settings: Settings) -> None:
    """The diff first (every entry, on stdout), then what was recorded; --dry-run records nothing."""
    from storage.catalog import service

    try:
        text = await asyncio.to_thread(Path(args.file).read_bytes)
    except OSError as exc:
        raise CliError(f"FILE: cannot read {args.file}: {exc.strerror}") from None
    async with _storage(settings) as st, st.engine.begin() as conn:
        report = await service.import_price_map(conn, text, dry_run=args.dry_run)
    _out(report)


def add_llms_commands(commands: Any) -> None:
    """The `llms` commands: they call storage/catalog/service.py, as the admin API's catalog routes do."""
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
    add = llms.add_parser("add", help="add a model (price version 1) with its aliases and capabilities")
    add.add_argument("name", help="the name clients ask for")
    add.add_argument("--provider", required=True, choices=PROVIDERS)
    add.add_argument("--upstream", help="the provider's model id (default: the name)")
    add.add_argument("--display-name")
    add.add_argument(
        "--alias", action="append", help="another name it answers to, e.g. a dated id (repeatable)"
    )
    add.add_argument("--input", required=True, help="USD per 1M input tokens")
    add.add_argument("--output", required=True, help="USD per 1M output tokens")
    add.add_argument("--cached-input", help="USD per 1M cache-read tokens (default: the input price)")
    add.add_argument("--cache-write", help="USD per 1M cache-write tokens (default: the input price)")
    add.add_argument(
        "--long-threshold", type=_int, help="prompt tokens above which the long-context prices apply"
    )
    add.add_argument("--long-input")
    add.add_argument("--long-cached-input")
    add.add_argument("--long-cache-write")
    add.add_argument("--long-output")
    add.add_argument("--context-window", required=True, type=_int, help="tokens of prompt and output")
    add.add_argument("--max-output", required=True, type=_int, help="the most output tokens per request")
    add.add_argument("--vision", action="store_true", help="it accepts images")
    add.add_argument("--no-tools", action="store_true", help="it cannot call tools")
    add.add_argument("--no-streaming", action="store_true", help="it cannot stream")
    add.set_defaults(run=cmd_llms_add)
    alias = llms.add_parser("alias", help="make more names resolve to a model")
    alias.add_argument("name")
    alias.add_argument("alias", nargs="+")
    alias.set_defaults(run=cmd_llms_alias)
    imp = llms.add_parser(
        "import",
        help="import LiteLLM's price map (model_prices_and_context_window.json): new models, new price "
        "versions (charged history keeps its prices)",
    )
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--dry-run", action="store_true", help="show the diff and change nothing")
    imp.set_defaults(run=cmd_llms_import)


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
    uupdate = users.add_parser("update", help="change a user's limits (over all their keys)")
    uupdate.add_argument("user_id", type=_uuid)
    _limit_flags(uupdate, key=False)
    uupdate.set_defaults(run=cmd_users_update)

    workspaces = commands.add_parser("workspaces", help="manage workspaces").add_subparsers(
        dest="action", required=True
    )
    wupdate = workspaces.add_parser("update", help="change a workspace's limits (across its users' keys)")
    wupdate.add_argument("workspace_id", type=_uuid)
    _limit_flags(wupdate, key=False)
    wupdate.set_defaults(run=cmd_workspaces_update)

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
    _limit_flags(key_create, key=True)
    key_create.set_defaults(run=cmd_keys_create)
    key_update = keys.add_parser("update", help="change a key's limits and expiry (`none` clears one)")
    key_update.add_argument("key_id", type=_uuid)
    _limit_flags(key_update, key=True)
    key_update.set_defaults(run=cmd_keys_update)
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

    add_llms_commands(commands)

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

    insights = commands.add_parser(
        "insights", help="churn, anomalies, tags: run the jobs, evaluate"
    ).add_subparsers(dest="action", required=True)
    ieval = insights.add_parser(
        "evaluate", help="score the insight models on held-out data (targets printed)"
    )
    ieval.add_argument("--seed", type=_int, default=7, help="the simulation's seed (default 7)")
    ieval.add_argument("--users", type=_int, default=400, help="simulated users (default 400)")
    ieval.add_argument(
        "--sentiment-set",
        action="append",
        default=[],
        metavar="PATH",
        help="a newer blind sentiment set (JSONL {text, lang, label}); repeatable; decides the target",
    )
    ieval.add_argument(
        "--tagging-set",
        action="append",
        default=[],
        metavar="PATH",
        help="a newer blind tagging set (JSONL {text, lang, tag}); repeatable; decides the targets",
    )
    ieval.add_argument(
        "--development",
        action="store_true",
        help="only the figures a developer may look at (old test sets, cross-validation); no blind set",
    )
    ieval.set_defaults(run=cmd_insights_evaluate)
    isim = insights.add_parser(
        "simulate", help="write a synthetic history (users, keys, usage, tags, feedback, spikes) for demos"
    )
    isim.add_argument("--users", type=_int, default=30, help="simulated users (default 30)")
    isim.add_argument("--days", type=_int, default=91, help="days of history, ending yesterday (default 91)")
    isim.add_argument("--seed", type=_int, default=7, help="the simulation's seed (default 7)")
    isim.add_argument(
        "--max-per-day", type=_int, default=20, help="requests recorded per user a day (default 20)"
    )
    isim.add_argument(
        "--spikes",
        type=_int,
        default=2,
        help="users given a runaway hour in the last 24 hours, for the anomaly job (default 2; 0-20)",
    )
    isim.set_defaults(run=cmd_insights_simulate)
    irun = insights.add_parser("run", help="run every insights job now (insights.daily and insights.hourly)")
    irun.set_defaults(run=cmd_insights_run)

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


async def cmd_partitions_list(args: argparse.Namespace, settings: Settings) -> None:
    from storage.usage import partitions

    async with _storage(settings) as st:
        found = await partitions.list_partitions(st.engine)
    _out({"partitions": [p.to_dict() for p in found], "total": partitions.summarise(found)})


async def cmd_partitions_ensure(args: argparse.Namespace, settings: Settings) -> None:
    from storage.types import utcnow
    from storage.usage import partitions

    ahead = settings.usage_partition_months_ahead if args.months_ahead is None else args.months_ahead
    async with _storage(settings) as st:
        report = await partitions.ensure_partitions(st.engine, utcnow(), ahead, months_back=args.months_back)
    _out(report.to_dict())


async def cmd_partitions_detach_old(args: argparse.Namespace, settings: Settings) -> None:
    from storage.types import utcnow
    from storage.usage import partitions

    months = settings.usage_retention_months if args.retention_months is None else args.retention_months
    async with _storage(settings) as st:
        report = await partitions.detach_old_partitions(
            st.engine, utcnow(), months, drop=args.drop or settings.usage_retention_drop
        )
    _out(report.to_dict())


def _add_partition_commands(commands: Any) -> None:
    parts = commands.add_parser(
        "partitions", help="usage_logs' monthly partitions (PostgreSQL; the usage.partitions job runs these)"
    ).add_subparsers(dest="action", required=True)
    plist = parts.add_parser("list", help="every partition (attached or detached): month, rows, bytes")
    plist.set_defaults(run=cmd_partitions_list)
    ensure = parts.add_parser(
        "ensure", help="create this month's and the next months' partitions; move rows out of the default"
    )
    ensure.add_argument(
        "--months-ahead",
        type=_int,
        help="months beyond this one (default SYNAPGATE_USAGE_PARTITION_MONTHS_AHEAD)",
    )
    ensure.add_argument(
        "--months-back",
        type=_int,
        default=0,
        help="also the months before this one (before importing history)",
    )
    ensure.set_defaults(run=cmd_partitions_ensure)
    detach = parts.add_parser(
        "detach-old", help="detach the months past the retention (rollups and the ledger keep their totals)"
    )
    detach.add_argument(
        "--retention-months",
        type=_int,
        help="months kept before this one (default SYNAPGATE_USAGE_RETENTION_MONTHS)",
    )
    detach.add_argument("--drop", action="store_true", help="drop the detached partitions")
    detach.set_defaults(run=cmd_partitions_detach_old)


def _add_jobs_and_alerts_commands(commands: Any, users: Any) -> None:
    _add_partition_commands(commands)
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
