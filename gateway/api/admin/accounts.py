"""Admin API: accounts routes (see gateway/api/admin/__init__.py)."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
