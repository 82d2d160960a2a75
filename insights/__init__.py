"""SynapGate's insight models: pure, offline code over the gateway's records.

Tags, sentiment, churn, model recommendations and spend anomalies. Imports only `pricing` and `config`;
the jobs that run them and the storage of their results live elsewhere.
"""
