"""Payments: prepaid credit bought through Stripe Checkout, posted to the ledger exactly once."""
