"""The model catalog as typed, immutable values: what a model is and what it costs.

Rows come from the `llms` table (storage loads them); this module only holds and looks them up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class PriceTier:
    """USD per 1M tokens for each kind of token. A missing cached or cache-write price bills at `input`."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None

    @property
    def cached_input_rate(self) -> Decimal:
        return self.input if self.cached_input is None else self.cached_input

    @property
    def cache_write_rate(self) -> Decimal:
        return self.input if self.cache_write is None else self.cache_write


@dataclass(frozen=True, slots=True)
class Pricing:
    """A model's prices: the base tier and, above `long_context_threshold` prompt tokens, the long tier."""

    base: PriceTier
    long_context_threshold: int | None = None
    long_context: PriceTier | None = None

    def tier_for(self, prompt_tokens: int) -> PriceTier:
        """The tier a request with this many prompt tokens is charged at."""
        if (
            self.long_context is not None
            and self.long_context_threshold is not None
            and prompt_tokens > self.long_context_threshold
        ):
            return self.long_context
        return self.base


@dataclass(frozen=True, slots=True)
class Model:
    """One catalog entry: the name clients use, where it is served, its prices and limits."""

    id: int
    name: str
    provider: str
    upstream_model: str
    display_name: str
    pricing: Pricing
    price_version: int
    context_window: int
    max_output_tokens: int
    supports_vision: bool = False
    supports_tools: bool = True
    supports_streaming: bool = True
    is_active: bool = True
    kind: str = "chat"  # chat | embedding: which routes may serve it


class Catalog:
    """An immutable name → Model map (and alias → model id); rebuilt whenever the catalog tables change."""

    __slots__ = ("_aliases", "_by_id", "_by_name")

    def __init__(self, models: Iterable[Model], aliases: Mapping[str, int] | None = None) -> None:
        self._by_name = {m.name: m for m in models}
        self._by_id = {m.id: m for m in self._by_name.values()}
        # A name always wins over an alias; an alias of a model that is not here resolves to nothing.
        self._aliases = {
            alias: self._by_id[model_id]
            for alias, model_id in (aliases or {}).items()
            if model_id in self._by_id and alias not in self._by_name
        }

    def get(self, name: str) -> Model | None:
        """The active model of that name or alias (Claude Code sends dated ids), or None."""
        model = self._by_name.get(name) or self._aliases.get(name)
        return model if model is not None and model.is_active else None

    def aliases_of(self, model: Model) -> list[str]:
        """The other names `model` answers to, sorted."""
        return sorted(alias for alias, m in self._aliases.items() if m.id == model.id)

    def by_id(self, model_id: int) -> Model | None:
        return self._by_id.get(model_id)

    def all(self) -> Iterator[Model]:
        return iter(self._by_name.values())

    def active(self) -> Iterator[Model]:
        return (m for m in self._by_name.values() if m.is_active)

    def __len__(self) -> int:
        return len(self._by_name)
