"""The dashboard at /dashboard: server-rendered pages over the same figures as the admin API.

`dashboard_router()` is all the app mounts: the pages, their static assets (vendored htmx, our CSS and
JS, served by the gateway itself: no CDN, works offline) and HTML error pages for its own routes.
"""

from __future__ import annotations

from litestar import Router
from litestar.static_files import create_static_files_router

from gateway.dashboard import accounts
from gateway.dashboard.context import DashboardError, SignInRequired
from gateway.dashboard.views import ROUTES, STATIC_DIR, dashboard_error, sign_in_required


def dashboard_router() -> Router:
    """The /dashboard router, with its static files under /dashboard/static."""
    static = create_static_files_router(
        path="/static",
        directories=[STATIC_DIR],
        name="dashboard:static",
        include_in_schema=False,
        cache_control=None,
    )
    return Router(
        path="/dashboard",
        route_handlers=[*ROUTES, *accounts.ROUTES, static],
        exception_handlers={DashboardError: dashboard_error, SignInRequired: sign_in_required},
        include_in_schema=False,
    )
