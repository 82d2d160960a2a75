"""Webhook alerts: endpoints, a durable outbox written in the caller's transaction, signed delivery."""
