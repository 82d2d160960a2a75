"""What every dashboard request starts from: who is signed in, and the range and filters of its URL.

The query string is the page's state (`start`, `end`, `workspace_id`, `user_id`, `model`, `key_id`), so
every view is a shareable URL. A user's session always narrows to that user; naming anyone else is a 404,
exactly as the admin API answers a user key (gateway/api/admin/scope.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from gateway.dashboard.data import Filters, Window
from gateway.dashboard.sessions import Session

DEFAULT_DAYS = 7
MAX_DAYS = 400
FILTER_NAMES = ("start", "end", "workspace_id", "user_id", "model", "key_id")


class DashboardError(Exception):
    """An error page: 404 for anything outside the caller's scope, 400 for a bad filter, 403 for CSRF."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(what: str = "page") -> DashboardError:
    return DashboardError(404, f"No such {what}.")


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in form."""


@dataclass(frozen=True, slots=True)
class View:
    """The range and filters of one page, as given (for the form and links) and as applied."""

    window: Window
    filters: Filters
    start_day: date
    end_day: date  # inclusive, as the date inputs show it
    params: dict[str, str] = field(default_factory=dict)  # the filters as they appear in the URL

    @property
    def days(self) -> float:
        assert self.window.start is not None and self.window.end is not None
        return (self.window.end - self.window.start).total_seconds() / 86400

    def query(self, **changes: str | int | None) -> str:
        """This view's query string with some parameters changed (None removes one)."""
        merged: dict[str, str] = dict(self.params)
        for name, value in changes.items():
            if value is None or value == "":
                merged.pop(name, None)
            else:
                merged[name] = str(value)
        return urlencode(merged)


def _moment(text: str, name: str, *, end: bool) -> datetime:
    """A date (a whole UTC day; an end date counts its whole day) or an aware ISO datetime (exact)."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DashboardError(400, f"'{name}' must be a date (2026-11-30) or a time with a zone.") from None
    if moment.tzinfo is None:
        raise DashboardError(400, f"'{name}' needs a time zone, e.g. 2026-11-30T00:00:00Z.")
    return moment.astimezone(UTC)


def _uuid(text: str | None, name: str) -> uuid.UUID | None:
    if not text:
        return None
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise DashboardError(400, f"'{name}' must be an id (a UUID).") from None


def parse_view(query: Mapping[str, str], session: Session, now: datetime | None = None) -> View:
    """The view a query string asks for, narrowed to the session's scope."""
    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    params = {k: query[k].strip() for k in FILTER_NAMES if query.get(k, "").strip()}
    end = _moment(params["end"], "end", end=True) if "end" in params else None
    start = _moment(params["start"], "start", end=False) if "start" in params else None
    if end is None:
        end = datetime.combine(today + timedelta(days=1), time(), UTC)
    if start is None:
        start = min(end, datetime.combine(today, time(), UTC)) - timedelta(days=DEFAULT_DAYS - 1)
    if end <= start:
        raise DashboardError(400, "'end' must be after 'start'.")
    if end - start > timedelta(days=MAX_DAYS):
        raise DashboardError(400, f"A range may span at most {MAX_DAYS} days.")
    user_id = _uuid(params.get("user_id"), "user_id")
    if not session.is_admin:
        if user_id is not None and user_id != session.user_id:
            raise not_found("user")
        user_id = session.user_id
    filters = Filters(
        user_id=user_id,
        workspace_id=_uuid(params.get("workspace_id"), "workspace_id"),
        model=params.get("model") or None,
        key_id=_uuid(params.get("key_id"), "key_id"),
    )
    last_day = (end - timedelta(microseconds=1)).date()
    return View(Window(start, end), filters, start.date(), last_day, params)
