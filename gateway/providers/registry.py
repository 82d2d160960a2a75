"""Which adapter speaks for which provider (the provider names of the catalog and the settings)."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.providers.anthropic import AnthropicAdapter, AnthropicStreamState
from gateway.providers.base import AnyAdapter, ProviderAdapter
from gateway.providers.gemini import GeminiAdapter, GeminiStreamState
from gateway.providers.openai_compat import OPENAI_COMPAT_ADAPTERS


def build_adapters() -> Mapping[str, AnyAdapter]:
    """One stateless adapter per provider name."""
    adapters: dict[str, AnyAdapter] = dict(OPENAI_COMPAT_ADAPTERS)
    # Typed as the protocol over each adapter's own stream state, so mypy checks conformance.
    anthropic: ProviderAdapter[AnthropicStreamState] = AnthropicAdapter()
    gemini: ProviderAdapter[GeminiStreamState] = GeminiAdapter()
    adapters["anthropic"] = anthropic
    adapters["gemini"] = gemini
    return adapters
