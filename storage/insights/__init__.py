"""Insight results: churn predictions, spend anomalies, automatic tags, recommendations."""
