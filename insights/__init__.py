"""SynapGate's insight models: pure, offline code over the gateway's records (tags, sentiment, churn,
model recommendations, spend anomalies). Imports only `pricing` and `config`; jobs and storage live elsewhere."""
