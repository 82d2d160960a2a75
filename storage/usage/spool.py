"""The durable local spool: records kept in an fsynced file while PostgreSQL is unreachable, replayed later.

With the Redis ledger, a request whose record cannot be committed because PostgreSQL is unreachable (an
outage, never a refused statement) still gets its answer: the record — exactly what the recording
transaction would have written, serialised — is appended to this instance's spool file and fsynced, the
Redis hot copy is settled as for a committed record (the debit waits in the user's `spool` hash until it has
a ledger version, see storage/billing/ledger/redis.py), and only then is the answer sent.

When PostgreSQL answers again a background task replays the spool in order through the normal recorder
(`record_batch`), exactly once: a record whose request id is already in usage_logs (its commit happened but
the acknowledgement was lost) is skipped, not debited twice. The file is removed only after every record in
it is committed or dead-lettered. A record PostgreSQL refuses on replay (a constraint, not an outage) goes to
the dead-letter file with one error log line — never silently dropped.

Files in `SYNAPGATE_SPOOL_DIR`, one set per instance (`<instance>` = SYNAPGATE_SPOOL_INSTANCE or the host
name; an exclusive lock keeps two processes off one set):
  <instance>.spool       the file records are appended to
  <instance>.replaying   the file being replayed (the spool file renamed; replayed first at start-up)
  <instance>.dead.jsonl  dead letters: one JSON line per record PostgreSQL refused, with its error
  <instance>.torn        bytes of a torn or corrupt tail (a crash mid-append): kept, reported, not replayed
Frame: 4-byte big-endian payload length, 4-byte CRC-32 of the payload, the payload (JSON, msgspec).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast

import msgspec
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.billing.ledger.base import CreditLedger, HotMove, Reservation
from storage.billing.ledger.entries import account_state
from storage.billing.ledger.redis import RedisLedger
from storage.models import UsageLog, table_of
from storage.outage import OutageWatch, describe, is_outage
from storage.types import utcnow
from storage.usage.recorder import (
    CompletionRecord,
    RecordResult,
    record_batch,
    record_completion,
    record_failure,
)

log = logging.getLogger("synapgate.spool")

usage_logs = table_of(UsageLog)

_HEADER = struct.Struct(">II")  # payload length, CRC-32 of the payload
_MAX_FRAME = 64 * 1024 * 1024  # a length above this is a corrupt header, not a record


class Recorder(Protocol):
    """What the chat service records through: the group-commit recorder, or the spool around it."""

    async def record(self, record: CompletionRecord, reservation: Reservation | None) -> RecordResult: ...


class SpoolUnavailable(Exception):
    """The spool cannot take a record: not writable, or full (SYNAPGATE_SPOOL_MAX_BYTES)."""


class SpooledRecord(msgspec.Struct, frozen=True):
    """One frame's payload: the record as the recording transaction would have written it."""

    record: CompletionRecord
    spooled_at: datetime
    instance: str


# -- the file format -------------------------------------------------------------------------------


def encode_frame(entry: SpooledRecord) -> bytes:
    """Length + CRC-32 + JSON payload: a torn or corrupted frame is recognised when read back."""
    payload = msgspec.json.encode(entry)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class SpoolContents:
    """What a spool file holds: the whole records in order, and where an unreadable tail begins (if any)."""

    records: list[SpooledRecord]
    good_bytes: int  # the length of the readable prefix
    torn_bytes: int  # bytes after it that are not a whole, checksummed record (a crash mid-append)


def read_frames(data: bytes) -> SpoolContents:
    """Decode frames until the data ends or one is torn or fails its checksum (the rest: the torn tail)."""
    records: list[SpooledRecord] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        start, end = offset + _HEADER.size, offset + _HEADER.size + length
        if length > _MAX_FRAME or end > len(data):
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            records.append(msgspec.json.decode(payload, type=SpooledRecord))
        except msgspec.DecodeError:
            break
        offset = end
    return SpoolContents(records, offset, len(data) - offset)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    """What `ledger reconcile` reports of a spool directory: records waiting for replay, and dead letters."""

    pending_records: int = 0
    pending_bytes: int = 0
    torn_bytes: int = 0
    dead_letters: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "spool_pending_records": self.pending_records,
            "spool_pending_bytes": self.pending_bytes,
            "spool_torn_bytes": self.torn_bytes,
            "spool_dead_letters": self.dead_letters,
        }


def spool_status(directory: Path) -> SpoolStatus:
    """Read every instance's spool files in `directory` (read only; for reconcile and tests)."""
    records = pending = torn = dead = 0
    if not directory.is_dir():
        return SpoolStatus()
    for path in sorted(directory.iterdir()):
        if path.suffix in (".spool", ".replaying"):
            contents = read_frames(path.read_bytes())
            records += len(contents.records)
            pending += contents.good_bytes
            torn += contents.torn_bytes
        elif path.name.endswith(".dead.jsonl"):
            dead += sum(1 for line in path.read_bytes().splitlines() if line.strip())
        elif path.suffix == ".torn":
            torn += path.stat().st_size
    return SpoolStatus(records, pending, torn, dead)


class SpoolFile:
    """One instance's spool files: appends (group-fsynced), rotation for replay, dead letters, torn tails."""

    def __init__(self, directory: Path, instance: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._name(instance)
        self._lock_fd: int | None = None
        self._size = 0
        self._largest = 4096
        self._waiting: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._file_lock = asyncio.Lock()  # an append and the rotation never interleave
        self.broken: str | None = None  # why the spool cannot be written (None: it can)

    def _name(self, instance: str) -> None:
        self.instance = instance
        self.path = self.directory / f"{instance}.spool"
        self.replaying = self.directory / f"{instance}.replaying"
        self.dead = self.directory / f"{instance}.dead.jsonl"
        self.torn = self.directory / f"{instance}.torn"

    def open(self) -> None:
        """Create the directory and take the first free spool name of this instance (`<instance>`, then
        `<instance>-1`, … for further workers on one host), with an exclusive lock; raises OSError.

        A restarted instance takes the same name back, so it replays what its predecessor left."""
        self.directory.mkdir(parents=True, exist_ok=True)
        base = self.instance
        for n in range(64):
            name = base if n == 0 else f"{base}-{n}"
            fd = os.open(self.directory / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._lock_fd = fd
            self._name(name)
            self._size = self._bytes_on_disk()
            return
        raise OSError(f"every spool name of instance {base!r} is locked by another process")

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in (self.path, self.replaying) if p.exists())

    @property
    def writable(self) -> bool:
        """Whether a record as large as the largest so far (at least 4 KiB) can be appended now: the file is
        writable and stays under SYNAPGATE_SPOOL_MAX_BYTES. Admission asks this before the upstream call."""
        room = self._size + self._largest <= self.max_bytes
        return self._lock_fd is not None and self.broken is None and room

    @property
    def pending(self) -> bool:
        """Records wait for replay (in the spool file, or in an unfinished replay)."""
        return (self.path.exists() and self.path.stat().st_size > 0) or self.replaying.exists()

    async def append(self, frame: bytes) -> None:
        """Append one frame; returns once it is fsynced (appends waiting together share one fsync)."""
        if self._lock_fd is None or self.broken is not None or self._size + len(frame) > self.max_bytes:
            raise SpoolUnavailable(self.broken or "the spool is full")
        self._size += len(frame)
        self._largest = max(self._largest, len(frame))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((frame, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="synapgate-spool-fsync")
        await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                async with self._file_lock:
                    await asyncio.to_thread(self._write, b"".join(frame for frame, _ in batch))
            except OSError as exc:
                self.broken = f"{type(exc).__name__}: {exc}"[:300]
                log.error("spool not writable: %s", self.broken, extra={"spool": str(self.path)})
                for _, done in batch:
                    if not done.done():
                        done.set_exception(SpoolUnavailable(self.broken))
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _write(self, data: bytes) -> None:
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            _fsync_dir(self.directory)

    async def rotate(self) -> bool:
        """Move the spool file aside for replay (unless a replay is unfinished). True: one to replay."""
        async with self._file_lock:
            if not self.replaying.exists() and self.path.exists():
                os.replace(self.path, self.replaying)
                _fsync_dir(self.directory)
            return self.replaying.exists()

    def read_replaying(self) -> tuple[SpoolContents, bytes]:
        data = self.replaying.read_bytes()
        return read_frames(data), data

    def keep_torn(self, data: bytes, good_bytes: int) -> None:
        """Move a torn tail of the file being replayed beside it (never replayed, never silently lost)."""
        with self.torn.open("ab") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        with self.replaying.open("r+b") as replaying:  # kept once: a replay that is retried reads it no more
            replaying.truncate(good_bytes)
            os.fsync(replaying.fileno())

    def dead_letter(self, entry: SpooledRecord, error: str) -> None:
        line = msgspec.json.encode({"error": error, "entry": entry}) + b"\n"
        with self.dead.open("ab") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())

    def finish_replay(self) -> None:
        """Every record of the replayed file is committed or dead-lettered: drop it."""
        self.replaying.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        self._size = self._bytes_on_disk()
        if self.broken is not None and self._size == 0:
            self.broken = None  # a fresh file may be writable again (e.g. the disk was full)


def default_instance() -> str:
    return socket.gethostname() or "synapgate"


# -- the recorder around the group commit ------------------------------------------------------------


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    skipped: int = 0  # already in usage_logs (committed, acknowledgement lost)
    dead: int = 0
    torn_bytes: int = 0
    seconds: float = 0.0
    done: bool = True  # False: PostgreSQL went away again mid-replay (the rest is replayed later)


@dataclass(slots=True)
class SpoolCounters:
    spooled: int = 0
    landed_after_unknown: int = 0  # the commit looked failed but had landed: answered without spooling
    replays: list[ReplayReport] = field(default_factory=list)


class SpoolingRecorder:
    """Records through the group commit; when PostgreSQL is unreachable, into the spool instead.

    Only with the Redis ledger (the hot copy must be settled without the database). Replays in the
    background whenever the spool holds records and PostgreSQL answers.
    """

    def __init__(
        self,
        inner: Recorder,
        engine: AsyncEngine,
        ledger: RedisLedger,
        spool: SpoolFile,
        *,
        database: OutageWatch | None = None,
        replay_interval: float = 1.0,
        replay_batch: int = 200,
    ) -> None:
        self._inner = inner
        self._engine = engine
        self._ledger = ledger
        self.spool = spool
        self._database = database
        self._interval = replay_interval
        self._batch = replay_batch
        self._replayer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.counters = SpoolCounters()

    @property
    def accepting(self) -> bool:
        """Whether a record could be spooled now (admission during an outage asks this first)."""
        return self.spool.writable

    def start(self) -> None:
        """Start the replay task; it replays what a previous run left behind first (a crash)."""
        self._replayer = asyncio.create_task(self._replay_forever(), name="synapgate-spool-replay")

    async def stop(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._replayer
            self._replayer = None
        self.spool.close()

    async def record(self, record: CompletionRecord, reservation: Reservation | None) -> RecordResult:
        """Commit through the group commit; on an outage, the outcome is unknown: check, then spool."""
        was_down = self._database is not None and self._database.down
        try:
            result = await self._inner.record(record, reservation)
        except Exception as exc:
            if not is_outage(exc):
                raise
            outage = exc
        else:
            if self._database is not None:
                self._database.succeeded()
            return result
        if self._database is not None:
            self._database.failed(outage)
        # The connection may have died during COMMIT: ask whether the record landed (unless the database was
        # already known to be down, so this write never reached it). One that cannot be asked is spooled, and
        # the replay skips it if it had landed after all.
        landed = None if was_down else await self._landed_now(record.request_id)
        if landed is not None:  # committed; only its acknowledgement was lost: the answer stands
            self.counters.landed_after_unknown += 1
            await self._ledger.forget_spooled(record.user_id, [], landed, reservation)
            return RecordResult(await self._serving_balance(record.user_id), _posts(record))
        try:
            await self.spool.append(encode_frame(SpooledRecord(record, utcnow(), self.spool.instance)))
        except SpoolUnavailable:
            raise outage from None
        self.counters.spooled += 1
        debit = -record.charged_nano if _posts(record) else 0
        try:
            await self._ledger.settle_spooled(record.user_id, reservation, record.request_id, debit)
        except Exception:
            # Durable is durable: the answer stands. Redis did not take the debit, so the hot copy lacks it
            # until the replay's move applies it under the version rule (nothing to subtract then); the
            # reservation is closed from the ledger's retry queue once Redis answers.
            await self._ledger.after_commit([HotMove(record.user_id, reservation, 0, None)])
        self._wake.set()
        return RecordResult(await self._serving_balance(record.user_id), _posts(record))

    async def record_failure(self, record: CompletionRecord) -> None:
        """The row of a failed request (no usage, no charge): written now, or spooled while PostgreSQL is
        unreachable (replayed like the rest; there is nothing to settle). Raises when it can be neither."""
        try:
            await record_failure(self._engine, record)
        except Exception as exc:
            if not is_outage(exc):
                raise
            if self._database is not None:
                self._database.failed(exc)
            try:
                await self.spool.append(encode_frame(SpooledRecord(record, utcnow(), self.spool.instance)))
            except SpoolUnavailable:
                raise exc from None
            self.counters.spooled += 1
            self._wake.set()

    async def _serving_balance(self, user_id: uuid.UUID) -> int:
        try:
            return await self._ledger.serving_balance(user_id)
        except Exception:  # only a header figure; the answer stands
            return 0

    async def _landed_now(self, request_id: str) -> int | None:
        """The user's account version if the record is in usage_logs; None if it is not or cannot be told."""
        try:
            async with asyncio.timeout(2.0):
                async with self._engine.connect() as conn:
                    found = await _landed(conn, [request_id])
                    if request_id not in found:
                        return None
                    return await _account_version(conn, found[request_id])
        except Exception:
            return None

    # -- replay -------------------------------------------------------------------------------

    async def _replay_forever(self) -> None:
        while True:
            try:
                if self.spool.pending and (self._database is None or not self._database.down):
                    await self.replay()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an outage again: the next round retries
                if not is_outage(exc):
                    log.exception("spool replay failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            await asyncio.sleep(self._interval if self.spool.pending else 0)

    async def replay(self) -> ReplayReport:
        """Replay the spool into PostgreSQL in order, exactly once; logs one line (count, seconds)."""
        started = time.monotonic()
        report = ReplayReport()
        if not await self.spool.rotate():
            return report
        contents, data = await asyncio.to_thread(self.spool.read_replaying)
        if contents.torn_bytes:
            await asyncio.to_thread(self.spool.keep_torn, data[contents.good_bytes :], contents.good_bytes)
            report.torn_bytes = contents.torn_bytes
            log.error(
                "spool tail torn or corrupt (a crash mid-append?): %d bytes kept in %s, not replayed",
                contents.torn_bytes,
                self.spool.torn.name,
            )
        try:
            for start in range(0, len(contents.records), self._batch):
                await self._replay_chunk(contents.records[start : start + self._batch], report)
        except Exception as exc:
            if not is_outage(exc):
                raise
            if self._database is not None:  # the watch probes now; the replay waits until it is back up
                self._database.failed(exc)
            report.done = False
            report.seconds = time.monotonic() - started
            log.warning(
                "spool replay interrupted: the database is unreachable again (%s); %d replayed so far",
                describe(exc),
                report.replayed,
            )
            return report
        await asyncio.to_thread(self.spool.finish_replay)
        report.seconds = time.monotonic() - started
        self.counters.replays.append(report)
        log.warning(
            "spool replayed: %d records in %.2f s (%d already recorded, %d dead-lettered)",
            report.replayed,
            report.seconds,
            report.skipped,
            report.dead,
            extra={
                "replayed": report.replayed,
                "skipped": report.skipped,
                "dead_letters": report.dead,
                "seconds": round(report.seconds, 3),
            },
        )
        return report

    async def _replay_chunk(self, entries: Sequence[SpooledRecord], report: ReplayReport) -> None:
        async with self._engine.connect() as conn:
            landed = await _landed(conn, [e.record.request_id for e in entries])
            versions = {uid: await _account_version(conn, uid) for uid in set(landed.values())}
        fresh = [e for e in entries if e.record.request_id not in landed]
        for entry in entries:
            rid = entry.record.request_id
            if rid in landed:  # committed before (its acknowledgement was lost): not debited twice
                report.skipped += 1
                await self._ledger.forget_spooled(entry.record.user_id, [rid], versions[landed[rid]])
        completions = [e for e in fresh if e.record.message_id is not None]
        failures = [e for e in fresh if e.record.message_id is None]
        if completions:
            replay_ledger = replay_ledger_for(self._ledger, completions)
            try:
                results = await record_batch(
                    self._engine, replay_ledger, [(e.record, None) for e in completions]
                )
            except Exception as exc:
                if is_outage(exc):
                    raise
                for entry in completions:  # one by one: only the refused record is dead-lettered
                    await self._replay_one(entry, report)
            else:
                await self._landed_meanwhile(completions, results, report)
        for entry in failures:
            await self._replay_one(entry, report)

    async def _landed_meanwhile(
        self, entries: Sequence[SpooledRecord], results: Sequence[RecordResult], report: ReplayReport
    ) -> None:
        """Count a replayed batch; a record the recorder found already recorded (it landed after the check
        above: `record_batch` is idempotent by request id, and its move then carries no version for it) is
        skipped like a landed one — its spool entry dropped and the snapshot reloaded from the ledger, so its
        debit is not left in the spool hash to count twice."""
        for entry, result in zip(entries, results, strict=True):
            rec = entry.record
            if result.posted or not _posts(rec):
                report.replayed += 1
                continue
            report.skipped += 1
            async with self._engine.connect() as conn:
                version = await _account_version(conn, rec.user_id)
            await self._ledger.forget_spooled(rec.user_id, [rec.request_id], version)

    async def _replay_one(self, entry: SpooledRecord, report: ReplayReport) -> None:
        rec = entry.record
        result: RecordResult | None = None
        try:
            if rec.message_id is None:
                await record_failure(self._engine, rec)
            else:
                ledger = replay_ledger_for(self._ledger, [entry])
                result = await record_completion(self._engine, ledger, rec, None)
        except Exception as exc:
            if is_outage(exc):
                raise
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            await asyncio.to_thread(self.spool.dead_letter, entry, error)
            report.dead += 1
            # The ledger stays the truth: the hot copy drops the refused debit (reloaded from the ledger).
            async with self._engine.connect() as conn:
                version = await _account_version(conn, rec.user_id)
            await self._ledger.forget_spooled(rec.user_id, [rec.request_id], version)
            log.error(
                "spooled record refused by the database on replay: kept as a dead letter in %s",
                self.spool.dead.name,
                extra={"request_id": rec.request_id, "error": error},
            )
            return
        if result is None:
            report.replayed += 1
        else:
            await self._landed_meanwhile([entry], [result], report)


def _posts(rec: CompletionRecord) -> bool:
    """Whether the record debits the ledger (the recorder's rule: a BYOK call only for a fee)."""
    return rec.message_id is not None and (not rec.byok or rec.charged_nano != 0)


async def _landed(conn: AsyncConnection, request_ids: Sequence[str]) -> dict[str, uuid.UUID]:
    """request id → user of the records among `request_ids` already in usage_logs."""
    if not request_ids:
        return {}
    rows = await conn.execute(
        select(usage_logs.c.request_id, usage_logs.c.user_id).where(
            usage_logs.c.request_id.in_(bindparam("ids", expanding=True))
        ),
        {"ids": list(request_ids)},
    )
    return {row[0]: row[1] for row in rows}


async def _account_version(conn: AsyncConnection, user_id: uuid.UUID) -> int:
    return (await account_state(conn, user_id))[1]


class _ReplayLedger:
    """The Redis ledger as a replayed batch's recorder sees it: the batch's debits are in the hot copy already
    (settled at spool time, waiting in each user's spool hash), so a move takes them out of the spool hash as
    it applies the posting at its version — the debit counts once (storage/billing/ledger/redis.py)."""

    def __init__(self, ledger: RedisLedger, entries: Sequence[SpooledRecord]) -> None:
        self._ledger = ledger
        self._spooled: dict[uuid.UUID, list[str]] = {}
        for e in entries:
            self._spooled.setdefault(e.record.user_id, []).append(e.record.request_id)

    async def settle_in_transaction(self, conn: AsyncConnection, reservations: Sequence[Reservation]) -> None:
        return None  # the reservations were closed at spool time

    async def after_commit(self, moves: Sequence[HotMove]) -> None:
        await self._ledger.after_replay(moves, self._spooled)

    # The rest of CreditLedger is the Redis ledger's own (the recorder uses only the two above).
    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)


def replay_ledger_for(ledger: RedisLedger, entries: Sequence[SpooledRecord]) -> CreditLedger:
    """The ledger a replayed batch is recorded with (exposed for tests)."""
    return cast(CreditLedger, _ReplayLedger(ledger, entries))  # the two methods the recorder calls
