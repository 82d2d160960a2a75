"""The pure rules of alerts and top-ups: when `credits.low` fires; thresholds and top-ups in exact units."""

from __future__ import annotations

import pytest

from storage.errors import InvalidAmount, InvalidInput, NotConfigured, NotFound
from storage.payments.stripe_checkout import (
    InvalidStripeSignature,
    InvalidTopUp,
    PaymentsNotConfigured,
    cents_of_usd,
)
from storage.webhooks.alerts import crossed_under, parse_threshold
from storage.webhooks.service import EndpointNotFound, WebhookInputError


def test_credits_low_fires_on_the_crossing_only() -> None:
    assert crossed_under(1_000, 999, 1_000)  # from exactly the threshold to under it
    assert crossed_under(5_000, -10, 1_000)
    assert not crossed_under(999, 500, 1_000)  # already under: no second alert
    assert not crossed_under(5_000, 1_000, 1_000)  # at the threshold is not under it
    assert not crossed_under(500, 2_000, 1_000)  # a top-up never fires it


def test_thresholds_are_exact_nano_usd() -> None:
    assert parse_threshold("5") == 5_000_000_000
    assert parse_threshold("0.000000001") == 1
    assert parse_threshold(None) is None
    for bad in ("-1", "lots", "0.0000000001"):
        with pytest.raises(InvalidAmount) as refused:
            parse_threshold(bad)
        assert refused.value.param == "low_balance_usd"


def test_top_ups_are_whole_cents() -> None:
    assert cents_of_usd("25") == 2500
    assert cents_of_usd("25.50") == 2550
    assert cents_of_usd(" 0.01 ") == 1
    for bad in ("25.001", "abc", "NaN", "Infinity", ""):
        with pytest.raises(InvalidTopUp) as refused:
            cents_of_usd(bad)
        assert refused.value.param == "amount_usd"


def test_service_errors_are_domain_errors() -> None:
    """The admin API maps them once, by class: 404, 400, 503."""
    assert isinstance(EndpointNotFound(), NotFound) and EndpointNotFound().code == "webhook_not_found"
    assert EndpointNotFound("user").param == "user_id"
    assert isinstance(WebhookInputError("bad", "url"), InvalidInput)
    assert isinstance(InvalidStripeSignature("bad"), InvalidInput)
    assert isinstance(PaymentsNotConfigured("SYNAPGATE_STRIPE_API_KEY is not set"), NotConfigured)
