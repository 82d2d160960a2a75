"""Usage: the recorder, rollups and analytics."""
