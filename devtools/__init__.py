"""Development and test tools, not shipped with the gateway (pyproject's package list leaves them out)."""
