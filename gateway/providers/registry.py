"""Which adapter speaks for which provider (the provider names of the catalog and the settings)."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import ProviderAdapter
from gateway.providers.gemini import GeminiAdapter
from gateway.providers.openai_compat import OPENAI_COMPAT_ADAPTERS


def build_adapters() -> Mapping[str, ProviderAdapter]:
    """One stateless adapter per provider name."""
    adapters: dict[str, ProviderAdapter] = dict(OPENAI_COMPAT_ADAPTERS)
    adapters["anthropic"] = AnthropicAdapter()
    adapters["gemini"] = GeminiAdapter()
    return adapters
