"""Model catalog, token counting and exact cost calculation (pure: no I/O beyond tiktoken's cache)."""
