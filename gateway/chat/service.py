"""Step 5, the service: one request from admission to recorded answer, and the owner of its reservation.

`ChatService` runs the steps (admit → reserve → call → relay → record) and is the only code that reserves,
releases or settles credit: `_holding` reserves before the upstream call and, unless the record committed
(which settles the reservation in its transaction), releases it on every way out — an upstream failure, a
record failure, a cancelled task, a bug.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from gateway.auth import KeyAuthenticator
from gateway.catalog_cache import CatalogCache
from gateway.chat.admit import Admission, Call, Inbound
from gateway.chat.call import RetryPolicy, complete_upstream, open_upstream_stream
from gateway.chat.limits import call_ratelimit_headers, limit_error
from gateway.chat.record import (
    Outcome,
    Recorded,
    completion_record,
    estimated_usage,
    failure_outcome,
    price_and_record,
)
from gateway.chat.relay import Send, finish_stream, relay_chunks, stream_outcome
from gateway.chat.resilience import CircuitBreaker
from gateway.chat.tagging import offer_first_exchange
from gateway.credentials import CredentialResolver
from gateway.errors import (
    GatewayError,
    conversation_not_found,
    from_provider_error,
    insufficient_credits,
    record_failed,
)
from gateway.outage import database_unavailable, ledger_unavailable
from gateway.providers.base import AnyAdapter, ProviderError
from gateway.proxy import Upstream
from pricing.money import format_usd
from storage.accounts.keys import KeyPrincipal
from storage.billing.ledger.base import CreditLedger, HotMove, InsufficientCredit, Reservation
from storage.billing.ledger.limits import LimitExceeded
from storage.outage import OutageWatch, is_outage
from storage.usage.group_commit import GroupCommitRecorder
from storage.usage.recorder import ConversationNotOwned, record_failure

log = logging.getLogger("synapgate.chat")

StartResponse = Callable[[dict[str, str]], Awaitable[None]]


class ChatService:
    """Runs metered chat completions; owns nothing, uses the app's shared resources."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        ledger: CreditLedger,
        auth: KeyAuthenticator,
        credentials: CredentialResolver,
        catalog: CatalogCache,
        upstream: Upstream,
        adapters: Mapping[str, AnyAdapter],
        recorder: GroupCommitRecorder,
        database: OutageWatch | None = None,
        hot_ledger: OutageWatch | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.ledger = ledger
        self.auth = auth  # the admin API drops revoked keys from its cache
        self.credentials = credentials  # and stored provider keys from this one
        self.catalog = catalog
        self.adapters = adapters
        self.upstream = upstream
        self.recorder = recorder
        self.database = database  # PostgreSQL's up/down state: while down, refused before admission
        self.hot_ledger = hot_ledger  # Redis's (None without Redis): logged once per outage
        self.admission = Admission(settings, engine, auth, credentials, catalog, adapters)
        self.policy = RetryPolicy.from_settings(settings)
        self.breaker = CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_cooldown_seconds)

    async def authenticate(self, headers: Mapping[str, str]) -> KeyPrincipal:
        """The principal of the request's gateway key (401 otherwise)."""
        return await self.admission.authenticate(headers)

    # -- the two paths -------------------------------------------------------------------------

    async def complete(self, inbound: Inbound) -> tuple[bytes, dict[str, str]]:
        """A non-streamed completion, recorded; returns the body and headers to send (errors raise)."""
        call = await self._admit(inbound)
        async with self._holding(call):
            try:
                response, result = await complete_upstream(
                    call, self.upstream, self.settings, self.policy, self.breaker
                )
            except ProviderError as exc:
                raise await self._failed(call, exc) from None
            outcome = Outcome(
                usage=result.usage or estimated_usage(call, result.content_text),
                content_text=result.content_text,
                finish_reason=result.finish_reason,
                upstream_ms=response.elapsed_ms,
            )
            recorded = await self._record(call, outcome)
        headers = self.response_headers(call)
        headers["x-synapgate-cost-usd"] = format_usd(recorded.cost_nano)
        headers["x-synapgate-charged-usd"] = format_usd(recorded.charged_nano)
        headers["x-synapgate-balance-usd"] = format_usd(recorded.balance_nano)
        return msgspec.json.encode(result.body), headers

    async def stream(
        self, inbound: Inbound, start: StartResponse, send: Send, disconnected: asyncio.Event
    ) -> None:
        """A streamed completion: errors before the upstream stream opens raise (nothing was sent yet);
        then `start(headers)` begins the response, chunks are relayed, the record is committed, and only
        then does the client get `[DONE]` (or an error event). A client that leaves is still billed for
        what was generated."""
        call = await self._admit(inbound)
        async with self._holding(call):
            try:
                stream = await open_upstream_stream(
                    call, self.upstream, self.settings, self.policy, self.breaker
                )
            except ProviderError as exc:
                raise await self._failed(call, exc) from None
            try:
                await start(self.response_headers(call))
            except BaseException:
                await stream.close()
                raise
            relayed = await relay_chunks(call, stream, send, disconnected)
            record_error: GatewayError | None = None
            try:
                await self._record(call, stream_outcome(call, relayed, stream.first_byte_ms))
            except GatewayError as exc:
                record_error = exc
        await finish_stream(send, relayed.end, record_error, disconnected)

    def response_headers(self, call: Call) -> dict[str, str]:
        return {
            "x-request-id": call.request_id,
            "x-synapgate-message-id": str(call.message_id),
            "x-synapgate-conversation-id": str(call.conversation_id),
            "x-synapgate-model": call.model.name,
            "x-synapgate-attempts": str(call.attempts),
            **call_ratelimit_headers(call.reservation),
        }

    # -- outages: refused before the upstream call ------------------------------------------------

    async def _admit(self, inbound: Inbound) -> Call:
        """Admission, refused fast (503) while the database is known to be down: nothing could be recorded."""
        if self.database is not None and self.database.down:
            raise database_unavailable()
        try:
            return await self.admission.admit(inbound)
        except Exception as exc:
            if not is_outage(exc):
                raise
            raise self._outage(exc, database=True) from None

    def _outage(self, exc: BaseException, *, database: bool) -> GatewayError:
        """Note the outage (one log line per state change) and say what to answer."""
        watch = self.database if database else self.hot_ledger
        if watch is not None:
            watch.failed(exc)
        return database_unavailable() if database else ledger_unavailable()

    # -- the reservation, owned here -----------------------------------------------------------

    @asynccontextmanager
    async def _holding(self, call: Call) -> AsyncIterator[None]:
        """Reserve the call's worst case and its limits; on the way out release it unless the record settled
        it. Even a zero amount is reserved: a negative balance admits nothing until it is topped up."""
        try:
            call.reservation = await self.ledger.reserve(
                call.principal.user_id, call.request_id, call.reserve_nano, call.limits
            )
        except InsufficientCredit as exc:
            raise insufficient_credits(exc.available_nano, exc.needed_nano) from None
        except LimitExceeded as exc:
            raise limit_error(exc) from None
        except Exception as exc:
            if not is_outage(exc):
                raise
            if _from_redis(exc) and not _refused(exc):
                # The script may have run before the connection died: close the reservation once the
                # ledger answers again (closing one that was never made changes nothing).
                lost = Reservation(call.principal.user_id, call.request_id, call.reserve_nano)
                await self._close_later(lost)
            raise self._outage(exc, database=not _from_redis(exc)) from None
        if self.hot_ledger is not None:
            self.hot_ledger.succeeded()
        try:
            yield
        finally:
            if not call.recorded:
                await self._release(call)

    async def _release(self, call: Call) -> None:
        reservation, call.reservation = call.reservation, None
        if reservation is None:
            return
        try:
            await self.ledger.release(reservation)
        except Exception as exc:  # never mask the original failure
            if not is_outage(exc):
                log.exception("reservation release failed", extra={"request_id": call.request_id})
            await self._close_later(reservation)

    async def _close_later(self, reservation: Reservation) -> None:
        """Hand a reservation the ledger could not close to its post-commit retry queue (idempotent)."""
        try:
            await self.ledger.after_commit([HotMove(reservation.user_id, reservation, 0, None)])
        except Exception:  # it expires by itself at its TTL
            log.warning("reservation left to expire", extra={"request_id": reservation.request_id})

    # -- recording -----------------------------------------------------------------------------

    async def _record(self, call: Call, outcome: Outcome) -> Recorded:
        """Commit the call's record (settling its reservation); a failure is a 503 and charges nothing."""
        try:
            recorded = await price_and_record(self.settings, self.recorder, call, outcome)
        except ConversationNotOwned:  # created by another user since admission
            raise conversation_not_found() from None
        except Exception as exc:
            if is_outage(exc):  # logged once by the watch, not a traceback per request
                if self.database is not None:
                    self.database.failed(exc)
            else:
                log.exception("recording failed; nothing charged", extra={"request_id": call.request_id})
            raise record_failed() from None
        if self.database is not None:
            self.database.succeeded()
        # The record settled the credit in its commit, and its limit holds to the actual figures right after
        # it, in the same round trip to the ledger that closed the reservation (`HotMove.limits_actual`).
        call.recorded = True
        offer_first_exchange(self.settings, self.engine, call)  # automatic tags, off the hot path
        return recorded

    async def _failed(self, call: Call, error: ProviderError) -> GatewayError:
        """Release the reservation, log the failed request (no charge), and say what to answer."""
        await self._release(call)
        gateway_error = from_provider_error(error)
        outcome = failure_outcome(error.code or error.type, gateway_error.status)
        try:
            await record_failure(
                self.engine, completion_record(call, outcome, cost_nano=0, charged_nano=0, keep_content=False)
            )
        except Exception as exc:  # the client's answer is the upstream error; a lost error row is only logged
            if is_outage(exc):
                if self.database is not None:
                    self.database.failed(exc)
            else:
                log.exception("could not log a failed request", extra={"request_id": call.request_id})
        return gateway_error


def _from_redis(exc: BaseException) -> bool:
    """An outage error raised by the Redis client (redis-py wraps every socket error in its own types)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__module__.split(".")[0] == "redis":
            return True
        current = current.__cause__ or current.__context__
    return False


def _refused(exc: BaseException) -> bool:
    """The connection was refused: the command never reached the server."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or "connecting to" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False
