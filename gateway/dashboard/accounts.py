"""Dashboard pages of accounts and money: users, keys, billing, the catalog, conversations, insights.

Every read and write goes through the admin API's service functions (via gateway/dashboard/data.py) with the
API's scope rules: the admin sees everyone; a user's session sees only that user, and anything else is 404.
Writes are admin-only (as in /api/v1), posted by plain forms carrying the session's CSRF token, and answered
with a redirect to the page that shows the result (except a new key: its plaintext is shown once, in place).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect

from gateway.dashboard import data
from gateway.dashboard.context import DashboardError, View, not_found, parse_view
from gateway.dashboard.data import Filters, PageRequest, Sums, Window
from gateway.dashboard.sessions import Session, new_token
from gateway.dashboard.views import (
    SECURITY_HEADERS,
    check_csrf,
    page,
    render,
    runtime_of,
    signed_in,
)

PAGE_SIZE = 50
EVENTS_PAGE_SIZE = 25
RUNWAY_DAYS = 7  # "recent daily spend" is what was charged over the last 7 days, per day
LIMIT_SUFFIXES = ("_limit", "_limit_nano", "_budget_nano", "_budget")


# -- small helpers -----------------------------------------------------------------------------------------


def _page_number(request: Request[Any, Any, Any], name: str = "page") -> int:
    try:
        return max(1, int(request.query_params.get(name, "1")))
    except ValueError:
        raise DashboardError(400, f"'{name}' must be a number.") from None


def _uuid_or_404(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise not_found(what) from None


def _domain(exc: data.DomainError) -> DashboardError:
    """A service's refusal as an error page: 404 for anything missing, else 400 with its message."""
    return DashboardError(404 if isinstance(exc, data.NotFound) else 400, exc.message)


def _require_admin(session: Session) -> None:
    if not session.is_admin:
        raise DashboardError(403, "Only the admin key may change this.")


def _redirect(target: str) -> Response[Any]:
    response: Response[Any] = Redirect(path=target, status_code=303)
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def _visible_user(session: Session, user_id: uuid.UUID) -> None:
    """A user's session sees only itself: any other user id is 404, as the admin API answers."""
    if not session.is_admin and user_id != session.user_id:
        raise not_found("user")


def limits_of(item: Any) -> list[tuple[str, Any]]:
    """The limits and budgets a key or user read carries (fields named *_limit, *_budget…), if any."""
    out = []
    for f in fields(item):
        if f.name.endswith(LIMIT_SUFFIXES):
            out.append((f.name, getattr(item, f.name)))
    return out


@dataclass(frozen=True, slots=True)
class Runway:
    """Balance ÷ recent daily spend: how many days the credit lasts at the last week's pace."""

    daily_nano: int  # charged per day, over the last RUNWAY_DAYS days (floor)
    days: float | None  # None when nothing was charged recently (no end in sight)


def runway(balance_nano: int, recent_charged_nano: int) -> Runway:
    daily = recent_charged_nano // RUNWAY_DAYS
    if recent_charged_nano <= 0:
        return Runway(0, None)
    return Runway(daily, max(0.0, round(balance_nano * RUNWAY_DAYS / recent_charged_nano, 1)))


def _recent_window(now: datetime | None = None) -> Window:
    now = now or datetime.now(UTC)
    return Window(now - timedelta(days=RUNWAY_DAYS), now)


# -- users -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserLine:
    user: Any
    sums: Sums
    balance_nano: int
    runway: Runway
    churn: data.ChurnInfo | None = None


@get("/users", name="dashboard:users")
async def users_page(request: Request[Any, Any, Any]) -> Response[str]:
    """Users (oldest first, 50 a page) with their activity in range, balance, runway and churn risk."""
    session = await signed_in(request)
    view = parse_view(request.query_params, session)
    number = _page_number(request)
    async with runtime_of(request).engine.connect() as conn:
        found = await data.list_users(
            conn, PageRequest(PAGE_SIZE, (number - 1) * PAGE_SIZE), only_user=session.user_id
        )
        ids = [u.id for u in found.items]
        activity = await data.grouped(conn, view.window, view.filters, ["user_id"], among_users=ids)
        recent = await data.grouped(
            conn, _recent_window(), Filters(user_id=session.user_id), ["user_id"], among_users=ids
        )
        balances = await data.settled_balances(conn, ids)
        churn = await data.churn_of_users(conn, ids)
        names = await data.model_names(conn)
    lines = []
    for u in found.items:
        charged = (recent.get((u.id,)) or Sums()).charged_nano
        lines.append(
            UserLine(
                u,
                activity.get((u.id,)) or Sums(),
                balances[u.id],
                runway(balances[u.id], charged),
                churn.get(u.id),
            )
        )
    return render(
        "users.html",
        **page(request, session, view, "users"),
        found=found,
        lines=lines,
        page_number=number,
        pages=max(1, -(-found.total // PAGE_SIZE)),
        model_names=names,
    )


@get("/users/{user_id:str}", name="dashboard:user")
async def user_page(request: Request[Any, Any, Any], user_id: FromPath[str]) -> Response[str]:
    """One user: activity in range, balance and runway, churn risk with its factors, keys with their limits,
    recent requests."""
    session = await signed_in(request)
    uid = _uuid_or_404(user_id, "user")
    _visible_user(session, uid)
    params = dict(request.query_params)
    params.pop("user_id", None)
    view = parse_view(params, session)
    filters = Filters(user_id=uid, workspace_id=view.filters.workspace_id, model=view.filters.model)
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        try:
            detail = await data.user_detail(conn, uid)
        except data.DomainError as exc:
            raise _domain(exc) from None
        totals = await data.totals(conn, view.window, filters)
        recent = await data.totals(conn, _recent_window(), Filters(user_id=uid))
        keys = await data.list_keys(conn, PageRequest(100, 0), user_id=uid)
        models = await data.grouped(conn, view.window, filters, ["model"])
        log = await data.request_log(conn, view.window, filters, status=None, limit=10, offset=0)
        churn = await data.churn_of(conn, uid)
        names = await data.model_names(conn)
    bal = await data.balance(runtime.engine, runtime.ledger, uid)
    by_model = sorted(models.items(), key=lambda kv: (-kv[1].cost_nano, str(kv[0][0])))
    return render(
        "user.html",
        **page(request, session, view, "users"),
        detail=detail,
        balance=bal,
        runway=runway(bal.balance_nano, recent.charged_nano),
        runway_days=RUNWAY_DAYS,
        totals=totals,
        error_rate=None if not totals.requests else round(totals.errors / totals.requests, 6),
        keys=keys.items,
        limits={k.id: limits_of(k) for k in keys.items},
        user_limits=limits_of(detail),
        by_model=[(key[0], sums) for key, sums in by_model],
        log=log,
        churn=churn,
        model_names=names,
    )


# -- keys --------------------------------------------------------------------------------------------------


async def _keys_context(
    request: Request[Any, Any, Any], session: Session, view: View, user_id: uuid.UUID | None
) -> dict[str, Any]:
    status = request.query_params.get("status") or None
    if status not in (None, "active", "revoked"):
        raise DashboardError(400, "'status' must be active or revoked.")
    number = _page_number(request)
    async with runtime_of(request).engine.connect() as conn:
        found = await data.list_keys(
            conn, PageRequest(PAGE_SIZE, (number - 1) * PAGE_SIZE), user_id=user_id, status=status
        )
        emails = await data.user_emails(conn, list({k.user_id for k in found.items}))
        users = (
            (await data.list_users(conn, PageRequest(1000, 0), only_user=None)).items
            if session.is_admin
            else []
        )
        names = await data.model_names(conn)
    return {
        **page(request, session, view, "keys"),
        "found": found,
        "emails": emails,
        "users": users,
        "limits": {k.id: limits_of(k) for k in found.items},
        "key_status": status,
        "page_number": number,
        "pages": max(1, -(-found.total // PAGE_SIZE)),
        "model_names": names,
        "created": None,
        "revoked": request.query_params.get("revoked"),
    }


@get("/keys", name="dashboard:keys")
async def keys_page(request: Request[Any, Any, Any]) -> Response[str]:
    """Gateway keys (prefix only), their allowed models and limits; create and revoke (admin)."""
    session = await signed_in(request)
    view = parse_view(request.query_params, session)
    return render("keys.html", **await _keys_context(request, session, view, view.filters.user_id))


@post("/keys", status_code=200)
async def create_key(request: Request[Any, Any, Any]) -> Response[str]:
    """Create a key (admin): the page that answers shows its plaintext, this once; it is stored nowhere."""
    session = await signed_in(request)
    form = await request.form()
    check_csrf(session.csrf_token, form.get("_csrf"))
    _require_admin(session)
    user_id = _uuid_or_404(str(form.get("user_id") or ""), "user")
    name = str(form.get("name") or "").strip() or None
    models_text = str(form.get("allowed_models") or "")
    allowed = [m.strip() for m in models_text.replace("\n", ",").split(",") if m.strip()] or None
    async with runtime_of(request).engine.begin() as conn:
        try:
            created = await data.create_key(conn, user_id, name=name, allowed_models=allowed)
        except data.DomainError as exc:
            raise _domain(exc) from None
    view = parse_view({}, session)
    context = await _keys_context(request, session, view, None)
    context["created"] = created
    return render("keys.html", **context)


@post("/keys/{key_id:str}/revoke", status_code=303)
async def revoke_key(request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[Any]:
    """Revoke a key (admin; idempotent): refused at once here, by every worker within the key cache time."""
    session = await signed_in(request)
    form = await request.form()
    check_csrf(session.csrf_token, form.get("_csrf"))
    kid = _uuid_or_404(key_id, "key")
    runtime = runtime_of(request)
    async with runtime.engine.begin() as conn:
        try:
            await data.get_key_of(conn, kid, session.user_id)
            _require_admin(session)
            await data.revoke_key(conn, kid)
        except data.DomainError as exc:
            raise _domain(exc) from None
    runtime.auth.forget()
    return _redirect(f"/dashboard/keys?revoked={kid}")


# -- billing -----------------------------------------------------------------------------------------------


@get("/billing", name="dashboard:billing")
async def billing_page(request: Request[Any, Any, Any]) -> Response[str]:
    """A user's balance (settled, held, available), add credits (admin), ledger events (paged), invoices.
    The admin picks the user (`user_id`); a user's session is its own."""
    session = await signed_in(request)
    view = parse_view(request.query_params, session)
    user_id = view.filters.user_id
    number = _page_number(request)
    runtime = runtime_of(request)
    bal = events = None
    detail = None
    async with runtime.engine.connect() as conn:
        users = (
            (await data.list_users(conn, PageRequest(1000, 0), only_user=None)).items
            if session.is_admin
            else []
        )
        if user_id is not None:
            try:
                detail = await data.user_detail(conn, user_id)
            except data.DomainError as exc:
                raise _domain(exc) from None
            events = await data.list_events(
                conn, user_id, PageRequest(EVENTS_PAGE_SIZE, (number - 1) * EVENTS_PAGE_SIZE)
            )
        invoices = await data.list_invoices(conn, PageRequest(100, 0), user_id=user_id)
        emails = await data.user_emails(conn, list({i.user_id for i in invoices.items}))
    if user_id is not None:
        bal = await data.balance(runtime.engine, runtime.ledger, user_id)
    return render(
        "billing.html",
        **page(request, session, view, "billing"),
        user_id=user_id,
        detail=detail,
        balance=bal,
        events=events,
        invoices=invoices,
        emails=emails,
        users=users,
        page_number=number,
        pages=max(1, -(-events.total // EVENTS_PAGE_SIZE)) if events else 1,
        idempotency_key=f"dashboard-{new_token()}",
        credited=request.query_params.get("credited"),
        replayed=request.query_params.get("replayed") == "1",
    )


@post("/billing/credits", status_code=303)
async def add_credits(request: Request[Any, Any, Any]) -> Response[Any]:
    """Add credits (admin) once per idempotency key (generated when the form was rendered): a double
    submit or a reload replays the first top-up and moves nothing."""
    session = await signed_in(request)
    form = await request.form()
    check_csrf(session.csrf_token, form.get("_csrf"))
    _require_admin(session)
    user_id = _uuid_or_404(str(form.get("user_id") or ""), "user")
    description = str(form.get("description") or "").strip() or None
    runtime = runtime_of(request)
    try:
        top_up = await data.add_credits(
            runtime.engine,
            runtime.ledger,
            user_id,
            str(form.get("amount_usd") or ""),
            str(form.get("idempotency_key") or ""),
            description,
        )
    except data.DomainError as exc:
        raise _domain(exc) from None
    replayed = "&replayed=1" if top_up.replayed else ""
    return _redirect(f"/dashboard/billing?user_id={user_id}&credited={top_up.event_id}{replayed}")


# -- catalog -----------------------------------------------------------------------------------------------

PRICE_FIELDS = (
    ("input_price", "Input"),
    ("output_price", "Output"),
    ("cached_input_price", "Cached input"),
    ("cache_write_price", "Cache write"),
)


@get("/catalog", name="dashboard:catalog")
async def catalog_page(request: Request[Any, Any, Any]) -> Response[str]:
    """The catalog with current prices (USD per 1M tokens); `?model=` shows its price history and, for the
    admin, the form that sets a new price version."""
    session = await signed_in(request)
    view = parse_view(request.query_params, session)
    async with runtime_of(request).engine.connect() as conn:
        found = await data.list_llms(conn, PageRequest(1000, 0))
        chosen = history = None
        if view.filters.model is not None:
            try:
                chosen, history = await data.model_with_history(conn, view.filters.model)
            except data.DomainError as exc:
                raise _domain(exc) from None
    return render(
        "catalog.html",
        **page(request, session, view, "catalog"),
        models=found.items,
        chosen=chosen,
        history=list(reversed(history or [])),
        price_fields=PRICE_FIELDS,
        model_names=[m.name for m in found.items],
        changed=request.query_params.get("changed"),
    )


@post("/catalog/price", status_code=303)
async def set_price(request: Request[Any, Any, Any]) -> Response[Any]:
    """A new price version (admin). Required: input and output; an optional price left blank keeps its
    current value (the API's rule when a field is omitted)."""
    session = await signed_in(request)
    form = await request.form()
    check_csrf(session.csrf_token, form.get("_csrf"))
    _require_admin(session)
    name = str(form.get("model") or "").strip()
    values: dict[str, Any] = {}
    runtime = runtime_of(request)
    try:
        for field_name, _label in PRICE_FIELDS:
            text = str(form.get(field_name) or "").strip()
            if text:
                values[field_name] = data.parse_rate(text, field_name)
            elif field_name in ("input_price", "output_price"):
                raise DashboardError(400, f"'{field_name}' is required.")
        change = data.PriceChange(**values)
        async with runtime.engine.begin() as conn:
            version = await data.set_price(conn, name, change)
    except data.DomainError as exc:
        raise _domain(exc) from None
    await runtime.catalog.refresh()
    return _redirect(f"/dashboard/catalog?{urlencode({'model': name, 'changed': version})}")


# -- conversations -----------------------------------------------------------------------------------------


@get("/conversations/{conversation_id:str}", name="dashboard:conversation")
async def conversation_page(request: Request[Any, Any, Any], conversation_id: FromPath[str]) -> Response[str]:
    """A conversation: per-model rows, tags (manual and automatic), messages (when stored) with feedback."""
    session = await signed_in(request)
    cid = _uuid_or_404(conversation_id, "conversation")
    number = _page_number(request)
    async with runtime_of(request).engine.connect() as conn:
        found = await data.conversation_view(conn, cid, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
        if found is None or (not session.is_admin and found.conversation.user_id != session.user_id):
            raise not_found("conversation")
        email = (await data.user_emails(conn, [found.conversation.user_id])).get(found.conversation.user_id)
    return render(
        "conversation.html",
        **page(request, session, None, "requests"),
        c=found.conversation,
        found=found,
        email=email,
        page_number=number,
        pages=max(1, -(-found.messages.total // PAGE_SIZE)),
        cost_nano=sum(row.cost_nano for row in found.llms),
    )


# -- insights ----------------------------------------------------------------------------------------------


CHURN_PAGE_SIZE = 25
ANOMALY_PAGE_SIZE = 25
RISKS = ("high", "medium", "low")


@dataclass(frozen=True, slots=True)
class AnomalyLine:
    anomaly: data.AnomalyInfo
    label: str  # the user's email, the key's prefix and name, or the workspace's name


@get("/insights", name="dashboard:insights")
async def insights_page(request: Request[Any, Any, Any]) -> Response[str]:
    """The churn risk list (most likely first, 25 a page, `risk=` filters; a user: its own prediction), as
    GET /api/v1/analytics/churn-prediction lists it; the spend anomalies of the range (newest first, 25 a
    page), as GET /api/v1/analytics/anomalies lists them; the model recommendations the daily job stored, as
    GET /api/v1/analytics/recommendations?source=snapshot returns them (a user: their own)."""
    session = await signed_in(request)
    view = parse_view(request.query_params, session)
    risk = request.query_params.get("risk") or None
    if risk is not None and risk not in RISKS:
        raise DashboardError(400, "'risk' must be high, medium or low.")
    number = _page_number(request)
    anomaly_number = _page_number(request, "anomalies_page")
    async with runtime_of(request).engine.connect() as conn:
        found = await data.list_churn(
            conn,
            PageRequest(CHURN_PAGE_SIZE, (number - 1) * CHURN_PAGE_SIZE),
            risk=risk,
            user_id=session.user_id,
        )
        anomalies = await data.list_anomalies(
            conn,
            view.window,
            PageRequest(ANOMALY_PAGE_SIZE, (anomaly_number - 1) * ANOMALY_PAGE_SIZE),
            user_id=session.user_id,
        )
        people = [c.user_id for c in found.items]
        people += [a.entity_id for a in anomalies.items if a.entity_type == "user"]
        emails = await data.user_emails(conn, people)
        keys = await data.key_labels(conn, [a.entity_id for a in anomalies.items if a.entity_type == "key"])
        spaces = await data.workspace_names(
            conn, [a.entity_id for a in anomalies.items if a.entity_type == "workspace"]
        )
        recommendations = await data.stored_recommendations(conn, user_id=session.user_id)
    labels = {
        "user": lambda i: emails.get(i),
        "key": lambda i: f"{keys[i].prefix}… {keys[i].name or ''}".strip() if i in keys else None,
        "workspace": lambda i: spaces.get(i),
    }
    current = {  # every link keeps the rest of the page's state
        "risk": risk,
        "page": number if number > 1 else None,
        "anomalies_page": anomaly_number if anomaly_number > 1 else None,
    }
    anomaly_lines = [
        AnomalyLine(a, labels[a.entity_type](a.entity_id) or str(a.entity_id)) for a in anomalies.items
    ]
    return render(
        "insights.html",
        **page(request, session, view, "insights"),
        churn=found,
        strongest={c.user_id: sorted(c.factors, key=lambda f: -abs(f["effect"]))[:3] for c in found.items},
        emails=emails,
        risk=risk,
        risks=RISKS,
        page_number=number,
        pages=max(1, -(-found.total // CHURN_PAGE_SIZE)),
        anomalies=anomalies,
        anomaly_lines=anomaly_lines,
        anomaly_page=anomaly_number,
        anomaly_pages=max(1, -(-anomalies.total // ANOMALY_PAGE_SIZE)),
        recommendations=recommendations,
        query=lambda **changes: urlencode(
            {k: v for k, v in {**view.params, **current, **changes}.items() if v is not None}
        ),
    )


ROUTES: list[Any] = [
    users_page,
    user_page,
    keys_page,
    create_key,
    revoke_key,
    billing_page,
    add_credits,
    catalog_page,
    set_price,
    conversation_page,
    insights_page,
]
