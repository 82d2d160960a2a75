"""Shipped data of the insight models: generated training sets and hand-written test sets (see README.md)."""
