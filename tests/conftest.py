"""Shared test set-up: the offline tiktoken cache and the recorded provider fixtures in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

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
