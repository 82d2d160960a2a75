"""Shared test set-up: the offline tiktoken cache and the recorded provider fixtures in ../shared."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"

# tiktoken must never try the network in tests: point it at the shipped encodings when they are here.
if (SHARED / "tiktoken").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures, or a skip that says why (a clone elsewhere has no shared folder)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"recorded provider fixtures not found at {FIXTURES} (no ../shared beside this clone)")
    return FIXTURES


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under xdist each module runs whole on one worker (module-scoped databases, browsers, local fakes), and
    the fault suite as one unit (its throwaway PostgreSQL and Redis listen on fixed private ports)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/faults" if path.startswith("tests/faults/") else path

    return ModuleScheduling(config, log)
