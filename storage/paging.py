"""One generic page of a list, and the bounds every list's paging is held to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.errors import InvalidPage

T = TypeVar("T")

MAX_LIMIT = 1000
MAX_OFFSET = 2**53  # far beyond any table, and inside BIGINT (a larger OFFSET overflows in the driver)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which rows of a stable ordering to return: `limit` 1..1000, `offset` 0..2**53."""

    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidPage(f"'limit' must be between 1 and {MAX_LIMIT}", param="limit")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise InvalidPage(f"'offset' must be between 0 and {MAX_OFFSET}", param="offset")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list and the number of rows of the whole list."""

    items: list[T]
    total: int
    limit: int = MAX_LIMIT
    offset: int = 0

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.items) < self.total


async def fetch_page(conn: AsyncConnection, query: Select[Any], page: PageRequest) -> tuple[list[Any], int]:
    """The rows of `query` on `page` and the total count (the query must order by a unique key last)."""
    total = (await conn.execute(select(func.count()).select_from(query.order_by(None).subquery()))).scalar()
    rows = (await conn.execute(query.limit(page.limit).offset(page.offset))).all()
    return list(rows), int(total or 0)


def page_of(items: list[T], total: int, page: PageRequest) -> Page[T]:
    return Page(items, total, page.limit, page.offset)
