"""Shared test set-up: the offline tiktoken cache and the recorded provider fixtures in ../shared."""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"

# tiktoken must never try the network in tests: point it at the shipped encodings when they are here.
if (SHARED / "tiktoken").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken"))


# Every httpx client (the tests' own, the SDKs', the gateway's per lifespan) builds a TLS context, loading the
# CA bundle: ~50 ms of CPU each, thousands of times over the suite, although every test talks plain HTTP on
# loopback. The suite builds one context per set of arguments and shares it.
ssl.create_default_context = functools.lru_cache(maxsize=16)(ssl.create_default_context)  # type: ignore[assignment]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures, or a skip that says why (a clone elsewhere has no shared folder)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"recorded provider fixtures not found at {FIXTURES} (no ../shared beside this clone)")
    return FIXTURES


# Rough cost of a test by where it lives, to hand the longest modules to the workers first (xdist takes the
# modules in collection order; a long module started last would run alone at the end).
_COST = {"tests/faults/": 50.0, "tests/browser/": 5.0, "tests/unit/insights/": 2.0, "tests/integration/": 1.0}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first (after pytest-randomly has shuffled: the order inside a module stays random)."""
    modules: dict[str, float] = {}
    for item in items:
        path = _scope(item.nodeid)
        cost = next((c for prefix, c in _COST.items() if path.startswith(prefix)), 0.1)
        modules[path] = modules.get(path, 0.0) + cost
    items.sort(key=lambda item: -modules[_scope(item.nodeid)])


def _scope(nodeid: str) -> str:
    """What runs whole on one worker: a module, or the whole fault suite."""
    path = nodeid.split("::", 1)[0]
    return "tests/faults/" if path.startswith("tests/faults/") else path


# The session's migrated templates, one definition for every directory (integration and browser tests both
# copy them): a database migrated to head once per test process.
@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated to head once per session; tests clone it."""
    from migrations.runner import upgrade
    from tests.integration.conftest import PG_HOST, TEMPLATE_DB, _admin, off_loop, pg_url

    try:
        _admin(f'CREATE DATABASE "{TEMPLATE_DB}"')
    except OSError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_HOST}:5432 ({exc}); the test command starts it")
    off_loop(upgrade, pg_url(TEMPLATE_DB))
    yield TEMPLATE_DB
    _admin(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; tests copy it."""
    from migrations.runner import upgrade
    from tests.integration.conftest import off_loop

    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    off_loop(upgrade, f"sqlite+aiosqlite:///{path}")
    return path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under xdist each module runs whole on one worker (module-scoped databases, browsers, local fakes), and
    the fault suite as one unit (its throwaway PostgreSQL and Redis listen on fixed private ports)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return ModuleScheduling(config, log)
