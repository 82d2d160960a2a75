"""How a relayed stream ended: the pure classification the service records and answers by."""

from __future__ import annotations

import pytest

from gateway.chat.relay import classify_stream_end
from gateway.providers.base import ProviderError

UPSTREAM_ERROR = ProviderError(500, "overloaded", code="server_error")


def test_a_stream_the_provider_finished_is_a_success() -> None:
    end = classify_stream_end(disconnected=False, error=None, upstream_done=True)
    assert (end.kind, end.status, end.code, end.error) == ("success", "success", None, None)


def test_a_stream_that_stops_before_the_provider_said_done_is_cut() -> None:
    end = classify_stream_end(disconnected=False, error=None, upstream_done=False)
    assert (end.kind, end.status, end.code) == ("cut", "error", "upstream_stream_cut")
    assert end.error is not None and end.error.status == 502  # the client is told, as a 502 error event


def test_an_error_the_provider_sent_is_recorded_with_its_code() -> None:
    end = classify_stream_end(disconnected=False, error=UPSTREAM_ERROR, upstream_done=False)
    assert (end.kind, end.status, end.code, end.error) == ("error", "error", "server_error", UPSTREAM_ERROR)
    coded = classify_stream_end(disconnected=False, error=ProviderError(502, "x"), upstream_done=True)
    assert coded.code == "upstream_stream_error"


@pytest.mark.parametrize("error", [None, UPSTREAM_ERROR])
@pytest.mark.parametrize("done", [False, True])
def test_a_client_that_left_is_cancelled_whatever_else_happened(
    error: ProviderError | None, done: bool
) -> None:
    end = classify_stream_end(disconnected=True, error=error, upstream_done=done)
    assert (end.kind, end.status, end.code, end.error) == (
        "cancelled",
        "cancelled",
        "client_disconnected",
        None,
    )
