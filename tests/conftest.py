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


# What a module takes (seconds, measured on the 2-core machine with `--junitxml`, rounded), to hand the
# longest to the workers first: xdist takes the modules in collection order (`--no-loadscope-reorder` in
# pyproject keeps it from re-sorting them by test count), and a long module started last would run alone at
# the end. Modules not listed count 0.05 s a test. The crash module goes first of all: most of it is a wait
# for a dead instance's lease to run out, which the other workers fill.
_MODULE_SECONDS = {
    "tests/faults/test_crash.py": 1000.0,
    "tests/browser/test_dashboard_accounts.py": 45.0,
    "tests/browser/test_dashboard.py": 36.0,
    "tests/faults/test_spool.py": 35.0,
    "tests/faults/test_outages.py": 27.0,
    "tests/integration/test_redis_cluster.py": 25.0,
    "tests/integration/test_budget_alerts.py": 25.0,
    "tests/integration/test_insights.py": 22.0,
    "tests/integration/test_chat_proxy.py": 18.0,
    "tests/integration/test_spool.py": 17.0,
    "tests/integration/test_hooks_http.py": 16.0,
    "tests/integration/test_limits.py": 15.0,
    "tests/faults/test_two_gateways.py": 14.0,
    "tests/browser/test_dashboard_recommendations.py": 14.0,
    "tests/integration/test_errors.py": 13.0,
    "tests/integration/test_promised_guarantees.py": 13.0,
    "tests/integration/test_partitions.py": 12.0,
    "tests/integration/test_analytics.py": 11.0,
}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first (after pytest-randomly has shuffled: the order inside a module stays random)."""
    counts: dict[str, int] = {}
    for item in items:
        path = _scope(item.nodeid)
        counts[path] = counts.get(path, 0) + 1
    cost = {path: _MODULE_SECONDS.get(path, 0.05 * n) for path, n in counts.items()}
    items.sort(key=lambda item: -cost[_scope(item.nodeid)])


def _scope(nodeid: str) -> str:
    """What runs whole on one worker: a module (its module-scoped databases, browser, fault stack)."""
    return nodeid.split("::", 1)[0]


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
    """Under xdist each module runs whole on one worker (module-scoped databases, browsers, local fakes, fault
    stacks; a worker's throwaway servers take its own slice of the fault suite's private ports)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return ModuleScheduling(config, log)
