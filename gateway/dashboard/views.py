"""Dashboard routes: sign-in and sign-out, the overview, costs (with CSV), model performance, the request log.

Handlers are thin: resolve the session and the view (range, filters, scope), read through
gateway/dashboard/data.py, render a template. Every headline figure is rendered with
`data-metric`/`data-value` holding the exact value the admin API would return for the same scope.
"""

from __future__ import annotations

import csv
import hmac
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode as _urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromPath
from litestar.response import Redirect, Stream

from gateway.dashboard import charts, data
from gateway.dashboard import format as fmt
from gateway.dashboard.context import (
    DashboardError,
    SignInRequired,
    View,
    not_found,
    parse_view,
)
from gateway.dashboard.data import DAY, HOUR, Sums
from gateway.dashboard.sessions import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL,
    Session,
    SessionStore,
    new_token,
    store_for,
)
from gateway.errors import GatewayError
from pricing.money import nano_to_usd, round_to_nano

if TYPE_CHECKING:
    from gateway.runtime import Runtime

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PAGE_SIZE = 50
TOP_N = 5

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters.update(
    usd=fmt.usd_display,
    usd_exact=fmt.usd_exact,
    integer=fmt.integer,
    compact=fmt.compact,
    percent=fmt.percent,
    ms=fmt.ms,
    number=fmt.number,
    when=fmt.when,
    short=fmt.short_id,
    rate=fmt.rate,
)


# -- plumbing ----------------------------------------------------------------------------------------------


def runtime_of(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def sessions_of(request: Request[Any, Any, Any]) -> SessionStore:
    runtime = runtime_of(request)
    return store_for(runtime.redis, runtime.engine)


def is_https(request: Request[Any, Any, Any]) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def render(
    template: str, http_status: int = 200, cookies: Sequence[Cookie] = (), **context: Any
) -> Response[str]:
    body = templates.get_template(template).render(**context)
    return Response(
        body,
        status_code=http_status,
        media_type="text/html; charset=utf-8",
        headers=SECURITY_HEADERS,
        cookies=list(cookies),
    )


def _session_cookie(request: Request[Any, Any, Any], value: str, max_age: int) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=value,
        path="/dashboard",
        httponly=True,
        samesite="lax",
        secure=is_https(request),
        max_age=max_age,
    )


async def signed_in(request: Request[Any, Any, Any]) -> Session:
    """The live session of this browser, or SignInRequired. A user's session ends with its key."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        raise SignInRequired
    session = await sessions_of(request).get(session_id)
    if session is None:
        raise SignInRequired
    runtime = runtime_of(request)
    if session.is_admin and runtime.settings.admin_key is None:
        raise SignInRequired
    if session.api_key_id is not None:
        async with runtime.engine.connect() as conn:
            if not await data.key_is_active(conn, session.api_key_id):
                await sessions_of(request).delete(session_id)
                raise SignInRequired
    return session


def check_csrf(expected: str | None, given: object) -> None:
    if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
        raise DashboardError(403, "This form has expired or did not come from this page. Reload and retry.")


def page(
    request: Request[Any, Any, Any], session: Session, view: View | None, nav: str, **context: Any
) -> dict[str, Any]:
    """The context every page template gets."""
    return {
        "session": session,
        "view": view,
        "nav": nav,
        "path": request.url.path,
        "today": datetime.now(UTC).date(),
        "timedelta": timedelta,
        "target": None,
        "statuses": None,
        **context,
    }


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/dashboard") and not target.startswith("//") and "\\" not in target:
        return target
    return "/dashboard"


# -- sign-in -----------------------------------------------------------------------------------------------


@get("/login", name="dashboard:login")
async def login_form(request: Request[Any, Any, Any]) -> Response[str]:
    """The sign-in form: one password field. Its CSRF token is a double-submit cookie (no session yet)."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
    cookie = Cookie(
        key=LOGIN_CSRF_COOKIE,
        value=token,
        path="/dashboard",
        httponly=True,
        samesite="lax",
        secure=is_https(request),
        max_age=3600,
    )
    return render(
        "login.html", csrf=token, next=_safe_next(request.query_params.get("next")), cookies=[cookie]
    )


@post("/login", status_code=303)
async def login_submit(request: Request[Any, Any, Any]) -> Response[Any]:
    """Sign in with the admin key or a user's gateway key; the session keeps the scope, not the key."""
    form = await request.form()
    check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE), form.get("_csrf"))
    key = str(form.get("key") or "").strip()
    target = _safe_next(str(form.get("next") or ""))
    runtime = runtime_of(request)
    admin_key = runtime.settings.admin_key
    user_id = workspace_id = key_id = None
    if (
        key
        and admin_key is not None
        and hmac.compare_digest(key.encode(), admin_key.get_secret_value().encode())
    ):
        pass  # the operator
    else:
        try:
            principal = await runtime.chat.auth.authenticate(f"Bearer {key}") if key else None
        except GatewayError:
            principal = None
        if principal is None:
            token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
            return render(
                "login.html",
                http_status=401,
                csrf=token,
                next=target,
                error="That key is not valid. Use the admin key or one of your gateway keys.",
            )
        user_id, workspace_id, key_id = principal.user_id, principal.workspace_id, principal.key_id
    session_id, _session = await sessions_of(request).create(user_id, workspace_id, key_id)
    response: Response[Any] = Redirect(path=target, status_code=303)
    response.set_cookie(_session_cookie(request, session_id, int(SESSION_TTL.total_seconds())))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/dashboard")
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    """Sign out (a CSRF-checked form post): the session is deleted server-side and the cookie cleared."""
    session = await signed_in(request)
    form = await request.form()
    check_csrf(session.csrf_token, form.get("_csrf"))
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        await sessions_of(request).delete(session_id)
    response: Response[Any] = Redirect(path="/dashboard/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/dashboard")
    return response


# -- shared pieces of the pages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a grouped table: a key (id or name), its label, link filter, and platform/BYOK totals."""

    key: Any
    label: str
    filter_name: str | None
    sums: Sums
    platform: Sums
    byok: Sums


def _split(found: dict[tuple[Any, ...], Sums]) -> dict[Any, tuple[Sums, Sums]]:
    """(dimension, byok) totals → per dimension: (platform, BYOK)."""
    out: dict[Any, tuple[Sums, Sums]] = {}
    for (key, byok), sums in found.items():  # one entry per (key, byok): no sums need adding here
        platform, own = out.get(key) or (Sums(), Sums())
        out[key] = (platform, sums) if byok else (sums, own)
    return out


FILTER_OF = {"model": "model", "user_id": "user_id", "workspace_id": "workspace_id", "api_key_id": "key_id"}

#: The sums a grouped table shows (reading 4 of the 12 halves the work over a 90-day rollup).
TABLE_FIELDS = ("requests", "errors", "cost_nano", "charged_nano")
#: How a grouped table may be ordered: column name -> the figure it sorts by.
SORTS: dict[str, Any] = {
    "cost": lambda r: r.sums.cost_nano,
    "charged": lambda r: r.sums.charged_nano,
    "requests": lambda r: r.sums.requests,
    "errors": lambda r: r.sums.errors,
    "platform": lambda r: r.platform.cost_nano,
    "byok": lambda r: r.byok.cost_nano,
}


async def _rows(
    conn: Any, view: View, dimension: str, *, sort: str = "cost", descending: bool = True
) -> list[Row]:
    """Totals per model / user / workspace / key with their platform–BYOK split, in the given order (ties:
    cost, then requests, then key). Labels are not looked up here (`_labelled` does it for a page)."""
    keys = [dimension, "user_api_key_used"]
    split = _split(await data.grouped(conn, view.window, view.filters, keys, fields=TABLE_FIELDS))
    rows = []
    for key, (platform, byok) in split.items():
        label = str(key) if dimension == "model" else ("(none)" if key is None else str(key))
        filter_name = FILTER_OF[dimension] if key is not None else None
        rows.append(Row(key, label, filter_name, Sums.total([platform, byok]), platform, byok))
    rows.sort(key=lambda r: (-r.sums.cost_nano, -r.sums.requests, str(r.key)))
    rows.sort(key=SORTS[sort], reverse=descending)  # stable: the tie order above stays
    return rows


async def _labelled(conn: Any, dimension: str, rows: Sequence[Row]) -> list[Row]:
    """The rows with their people-readable labels (emails, workspace names, key prefixes), looked up only
    for these rows."""
    keys = [r.key for r in rows if r.key is not None]
    labels: dict[Any, str] = {}
    if dimension == "user_id":
        labels = dict(await data.user_emails(conn, keys))
    elif dimension == "workspace_id":
        labels = dict(await data.workspace_names(conn, keys))
    elif dimension == "api_key_id":
        found = await data.key_labels(conn, keys)
        labels = {k: f"{v.prefix}… {v.name or ''}".strip() for k, v in found.items()}
    return [
        Row(r.key, labels.get(r.key) or r.label, r.filter_name, r.sums, r.platform, r.byok)
        if r.key is not None
        else r
        for r in rows
    ]


async def _top(conn: Any, view: View, dimension: str, n: int = TOP_N) -> list[Row]:
    return await _labelled(conn, dimension, (await _rows(conn, view, dimension))[:n])


def _series_chart(found: dict[datetime, Sums], view: View, unit: timedelta) -> dict[str, Any]:
    """Spend and requests per period, every period of the range present (zero where idle)."""
    assert view.window.start is not None and view.window.end is not None
    periods: list[datetime] = []
    moment = data.floor_to(view.window.start, unit)
    while moment < view.window.end and len(periods) < 2000:
        periods.append(moment)
        moment += unit
    label_format = "%H:%M" if unit == HOUR else "%m-%d"
    hover_format = "%Y-%m-%d %H:00 UTC" if unit == HOUR else "%Y-%m-%d (UTC)"
    spend, requests = [], []
    for p in periods:
        s = found.get(p) or Sums()
        spend.append(
            charts.Point(
                p.strftime(label_format),
                float(nano_to_usd(s.cost_nano)),
                f"{p.strftime(hover_format)}: ${fmt.usd_exact(s.cost_nano)}",
            )
        )
        requests.append(
            charts.Point(
                p.strftime(label_format),
                float(s.requests),
                f"{p.strftime(hover_format)}: {s.requests:,} requests, {s.errors:,} errors",
            )
        )
    unit_name = "hour" if unit == HOUR else "day"
    return {
        "unit": unit_name,
        "spend": charts.column_chart(spend, label=f"Spend per {unit_name}", axis_format=_axis_usd),
        "requests": charts.column_chart(
            requests,
            label=f"Requests per {unit_name}",
            axis_format=lambda v: f"{v:,.0f}",
            css_class="bars alt",
        ),
    }


def _axis_usd(value: float) -> str:
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4g}"


async def _model_names(conn: Any) -> list[str]:
    return await data.model_names(conn)


# -- pages -------------------------------------------------------------------------------------------------


@get("/", name="dashboard:overview")
async def overview(request: Request[Any, Any, Any]) -> Response[str]:
    """Spend, charged, requests, tokens, error rate and latency for the range; series; top lists."""
    session = await signed_in(request)
    view = parse_view(request.query_params, session)
    async with runtime_of(request).engine.connect() as conn:
        totals = await data.totals(conn, view.window, view.filters)
        unit = HOUR if view.days <= 2 else DAY
        found = await data.series(conn, view.window, view.filters, unit)
        if found is None and unit == HOUR:
            unit = DAY
            found = await data.series(conn, view.window, view.filters, unit)
        latency = await data.latency(conn, view.window, view.filters, totals.successes)
        models = await _top(conn, view, "model")
        users = await _top(conn, view, "user_id") if session.is_admin else []
        workspaces = await _top(conn, view, "workspace_id")
        names = await _model_names(conn)
    return render(
        "overview.html",
        **page(request, session, view, "overview"),
        totals=totals,
        error_rate=fmt.ratio(totals.errors, totals.requests),
        latency=latency,
        chart=None if found is None else _series_chart(found, view, unit),
        top_models=models,
        top_users=users,
        top_workspaces=workspaces,
        model_names=names,
    )


COST_TABLES = {"workspace": "workspace_id", "user": "user_id", "model": "model", "key": "api_key_id"}
COST_PAGE_SIZE = 25
MAX_COST_PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class CostTable:
    """One page of one cost table, in the order its URL asks for (`<table>_sort`, `_dir`, `_page`)."""

    name: str
    rows: list[Row]
    total: int
    sort: str
    descending: bool
    page_number: int
    pages: int
    first: int  # the 1-based rank of the first row shown


def _number(query: Any, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(query.get(name) or default)
    except ValueError:
        raise DashboardError(400, f"'{name}' must be a number.") from None
    if not low <= value <= high:
        raise DashboardError(400, f"'{name}' must be between {low} and {high}.")
    return value


def _table_order(query: Any, name: str) -> tuple[str, bool, int, int]:
    """A cost table's sort column, direction, page and page size from the query string (400 when not
    valid)."""
    sort = query.get(f"{name}_sort") or "cost"
    if sort not in SORTS:
        raise DashboardError(400, f"'{name}_sort' must be one of {', '.join(SORTS)}.")
    direction = query.get(f"{name}_dir") or "desc"
    if direction not in ("asc", "desc"):
        raise DashboardError(400, f"'{name}_dir' must be asc or desc.")
    number = _number(query, f"{name}_page", 1, 1, 1_000_000)
    size = _number(query, f"{name}_size", COST_PAGE_SIZE, 1, MAX_COST_PAGE_SIZE)
    return sort, direction == "desc", number, size


def query_with(query: Any, **changes: str | int | None) -> str:
    """The request's whole query string (filters, every table's order and page) with some changes."""
    merged = {k: v for k, v in query.items() if v != ""}
    for name, value in changes.items():
        if value is None or value == "":
            merged.pop(name, None)
        else:
            merged[name] = str(value)
    return _urlencode(merged)


@get("/costs", name="dashboard:costs")
async def costs(request: Request[Any, Any, Any]) -> Response[str]:
    """Cost and charged amounts by workspace, user, model and key, platform vs BYOK: each table sorted and
    paged on the server (`<table>_size`, 25 a page by default); the CSV export holds a whole table."""
    session = await signed_in(request)
    view = parse_view(request.query_params, session)
    orders = {name: _table_order(request.query_params, name) for name in COST_TABLES}
    tables: dict[str, CostTable] = {}
    async with runtime_of(request).engine.connect() as conn:
        by_byok = await data.grouped(conn, view.window, view.filters, ["user_api_key_used"])
        platform, byok = by_byok.get((False,)) or Sums(), by_byok.get((True,)) or Sums()
        for name, dimension in COST_TABLES.items():
            if name == "user" and not session.is_admin:
                continue
            sort, descending, number, size = orders[name]
            rows = await _rows(conn, view, dimension, sort=sort, descending=descending)
            pages = max(1, -(-len(rows) // size))
            first = (min(number, pages) - 1) * size
            shown = await _labelled(conn, dimension, rows[first : first + size])
            tables[name] = CostTable(name, shown, len(rows), sort, descending, number, pages, first + 1)
        names = await _model_names(conn)
    return render(
        "costs.html",
        **page(request, session, view, "costs"),
        totals=Sums.total([platform, byok]),
        platform=platform,
        byok=byok,
        tables=tables,
        model_names=names,
        query_with=lambda **changes: query_with(request.query_params, **changes),
    )


CSV_HEADER = (
    "label",
    "requests",
    "errors",
    "cost_usd",
    "cost_nano",
    "charged_usd",
    "charged_nano",
    "platform_cost_usd",
    "platform_cost_nano",
    "byok_cost_usd",
    "byok_cost_nano",
)
CSV_CHUNK = 500


def _csv_line(*values: Any) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


@get("/costs.csv", name="dashboard:costs_csv")
async def costs_csv(request: Request[Any, Any, Any]) -> Stream:
    """One whole cost table as CSV, streamed (labels looked up 500 rows at a time): exact USD strings and
    integer nano-USD, nothing rounded; in the order the page shows it."""
    session = await signed_in(request)
    view = parse_view(request.query_params, session)
    table = request.query_params.get("table", "")
    if table not in COST_TABLES:
        raise DashboardError(400, "'table' must be one of workspace, user, model, key.")
    sort, descending, _page, _size = _table_order(request.query_params, table)
    engine = runtime_of(request).engine
    dimension = COST_TABLES[table]
    async with engine.connect() as conn:
        rows = await _rows(conn, view, dimension, sort=sort, descending=descending)

    async def lines() -> AsyncIterator[str]:
        yield _csv_line(table, *CSV_HEADER)
        for start in range(0, len(rows), CSV_CHUNK):
            async with engine.connect() as conn:
                chunk = await _labelled(conn, dimension, rows[start : start + CSV_CHUNK])
            yield "".join(
                _csv_line(
                    "" if r.key is None else str(r.key),
                    r.label,
                    r.sums.requests,
                    r.sums.errors,
                    fmt.usd_exact(r.sums.cost_nano),
                    r.sums.cost_nano,
                    fmt.usd_exact(r.sums.charged_nano),
                    r.sums.charged_nano,
                    fmt.usd_exact(r.platform.cost_nano),
                    r.platform.cost_nano,
                    fmt.usd_exact(r.byok.cost_nano),
                    r.byok.cost_nano,
                )
                for r in chunk
            )

    filename = f"synapgate-costs-by-{table}-{view.start_day}-{view.end_day}.csv"
    return Stream(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'},
    )


@dataclass(frozen=True, slots=True)
class ModelLine:
    """One row of the performance table, derived exactly as /api/v1/analytics/llm-performance does."""

    model: str
    provider: str | None
    requests: int
    errors: int
    error_rate: float | None
    latency_p50: float | None
    latency_p95: float | None
    ttft_p50: float | None
    tokens_per_second: float | None
    output_tokens: int
    cost_nano: int
    cost_per_1k_nano: int | None
    feedback_count: int
    stars_average: float | None
    thumbs_up_rate: float | None


def _ms3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@get("/models", name="dashboard:models")
async def models(request: Request[Any, Any, Any]) -> Response[str]:
    """LLM performance per model: requests, errors, latency, TTFT, throughput, unit cost, feedback."""
    session = await signed_in(request)
    view = parse_view(request.query_params, session)
    async with runtime_of(request).engine.connect() as conn:
        report = await data.llm_performance(conn, view.window, view.filters.user_id)
        names = await _model_names(conn)
    lines = []
    for m in report.models:
        if view.filters.model is not None and m.model.name != view.filters.model:
            continue
        s, p, f = m.sums, m.percentiles, m.feedback
        per_1k = None
        if s.output_tokens:
            per_1k = round_to_nano(nano_to_usd(s.cost_nano) * 1000 / Decimal(s.output_tokens))
        lines.append(
            ModelLine(
                model=m.model.name,
                provider=m.model.provider,
                requests=s.requests,
                errors=s.errors,
                error_rate=fmt.ratio(s.errors, s.requests),
                latency_p50=_ms3(p.latency_p50),
                latency_p95=_ms3(p.latency_p95),
                ttft_p50=_ms3(p.ttft_p50),
                tokens_per_second=fmt.ratio(s.success_output_tokens * 1000, s.success_latency_ms_sum, 3),
                output_tokens=s.output_tokens,
                cost_nano=s.cost_nano,
                cost_per_1k_nano=per_1k,
                feedback_count=f.count,
                stars_average=fmt.ratio(f.stars_sum, f.stars_count, 3),
                thumbs_up_rate=fmt.ratio(f.thumbs_up, f.thumbs_up + f.thumbs_down),
            )
        )
    ignored = [n for n in ("workspace_id", "key_id") if n in view.params]
    return render(
        "models.html",
        **page(request, session, view, "models"),
        lines=lines,
        method=report.percentile_method,
        ignored=ignored,
        model_names=names,
    )


STATUSES = ("success", "error", "cancelled")


@get("/requests", name="dashboard:requests")
async def requests_page(request: Request[Any, Any, Any]) -> Response[str]:
    """The request log, newest first, 50 a page; htmx swaps only the table on filter and paging."""
    session = await signed_in(request)
    view = parse_view(request.query_params, session)
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise DashboardError(400, "'status' must be success, error or cancelled.")
    try:
        number = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        raise DashboardError(400, "'page' must be a number.") from None
    async with runtime_of(request).engine.connect() as conn:
        found = await data.request_log(
            conn, view.window, view.filters, status=status, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
        )
        emails = (
            await data.user_emails(conn, list({r.user_id for r in found.rows})) if session.is_admin else {}
        )
        names = await _model_names(conn)
    pages = max(1, -(-found.total // PAGE_SIZE))
    context = {
        **page(request, session, view, "requests"),
        "found": found,
        "emails": emails,
        "status": status,
        "page_number": number,
        "pages": pages,
        "page_size": PAGE_SIZE,
        "statuses": STATUSES,
        "model_names": names,
    }
    if request.headers.get("hx-target") == "request-log":
        return render("_request_log.html", **context)
    return render("requests.html", **context)


@get("/requests/{request_id:str}", name="dashboard:request")
async def request_page(request: Request[Any, Any, Any], request_id: FromPath[str]) -> Response[str]:
    """One request in full, with its conversation and the feedback on it. Another user's: 404."""
    session = await signed_in(request)
    async with runtime_of(request).engine.connect() as conn:
        detail = await data.request_detail(conn, request_id)
        if detail is None or (not session.is_admin and detail.request.user_id != session.user_id):
            raise not_found("request")
        key = (await data.key_labels(conn, [detail.request.api_key_id])) if detail.request.api_key_id else {}
        emails = await data.user_emails(conn, [detail.request.user_id]) if session.is_admin else {}
    return render(
        "request.html",
        **page(request, session, None, "requests"),
        detail=detail,
        r=detail.request,
        key=key.get(detail.request.api_key_id) if detail.request.api_key_id else None,
        email=emails.get(detail.request.user_id),
    )


# -- errors ------------------------------------------------------------------------------------------------


def dashboard_error(request: Request[Any, Any, Any], exc: DashboardError) -> Response[str]:
    titles = {400: "That filter is not valid", 403: "Refused", 404: "Not found"}
    return render(
        "error.html",
        http_status=exc.status,
        title=titles.get(exc.status, "Error"),
        message=exc.message,
        session=None,
        nav=None,
        view=None,
    )


def sign_in_required(request: Request[Any, Any, Any], _: SignInRequired) -> Response[Any]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"/dashboard/login?{_urlencode_next(target)}"
    if request.headers.get("hx-request"):  # htmx follows HX-Redirect with a full page load
        return Response("", status_code=401, headers={"HX-Redirect": location})
    response: Response[Any] = Redirect(path=location, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/dashboard")
    return response


def _urlencode_next(target: str) -> str:
    return _urlencode({"next": target})


ROUTES: list[Any] = [
    login_form,
    login_submit,
    logout,
    overview,
    costs,
    costs_csv,
    models,
    requests_page,
    request_page,
]
