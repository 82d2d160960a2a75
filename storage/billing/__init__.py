"""Billing: the credit ledger, top-ups, ledger events, invoices and reconciliation."""
