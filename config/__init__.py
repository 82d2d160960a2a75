"""Typed settings for SynapGate."""

from config.settings import PROVIDERS, ProviderSettings, Settings, SettingsError, load_settings

__all__ = ["PROVIDERS", "ProviderSettings", "Settings", "SettingsError", "load_settings"]
