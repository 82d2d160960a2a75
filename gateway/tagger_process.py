"""The offline insight models in a process of their own, so that request-serving workers stay small.

scikit-learn, SciPy, NumPy and the fitted tagging and sentiment models cost a worker ~130 MB; here they are
loaded once per gateway, in one child process, whatever `--workers` says. The serving side speaks to it over
a Unix socket (`TaggerClient`): a request is one frame (4-byte big-endian length, then JSON), and so is its
answer:

    {"op": "tag", "texts": [...]}        → {"tags": [[name, confidence], ...]}
    {"op": "sentiment", "comment": "…"}  → {"label": "positive|neutral|negative", "score": s}

The text crosses the socket and lives in the two processes' memory only: nothing here stores it. The child
(`python -m gateway.tagger_process --socket PATH`) binds its socket at once and loads its models in
its one compute thread, so early requests wait for them rather than fail; it exits when its parent does.
`TaggerProcess` starts it and starts it again when it dies (`synapgate serve` does so before its workers
start and hands them the socket through `SYNAPGATE_TAGGER_SOCKET`; an app started any other way starts its
own on first use). A client that finds no process answering gets None — the caller degrades (a tag
skipped, a sentiment filled in later) with a log line, and the request it serves never fails for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from insights.labels import LABELS, Sentiment, TagPrediction

log = logging.getLogger("synapgate.insights")

_HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024  # a request's texts; the models read the first few thousand characters anyway
CONNECT_TIMEOUT = 5.0  # how long a client waits for the socket to accept (a process restarting after a death)
STARTING_SECONDS = 30.0  # a process this young may still be starting: its client waits as long as its answer
# How long an answer may take: the first one waits for the models to load (~2 s from their disk cache; a
# cold cache trains them, seconds to tens of seconds on a busy machine).
ANSWER_TIMEOUT = 60.0
# A feedback request waits this long for its comment's sentiment; later, it is saved without one and the
# background queue fills it in.
REQUEST_ANSWER_TIMEOUT = 30.0
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)  # after a death, then again while it keeps dying quickly
STABLE_SECONDS = 30.0  # a process that lived this long restarts after the first delay again


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False).encode()
    return _HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the limit")
    found = json.loads(await reader.readexactly(size))
    if not isinstance(found, dict):
        raise ValueError("a frame holds a JSON object")
    return found


# -- the serving side ------------------------------------------------------------------------------------


class TaggerClient:
    """Asks the tagger process; None (and one log line per outage) when it cannot answer."""

    def __init__(self, socket_path: str, owner: TaggerProcess | None = None) -> None:
        self.socket_path = socket_path
        self.owner = owner  # the process this app started itself (started on first use), if any
        self.failures = 0  # calls that got no answer (counted, for tests and the log)
        self._down = False

    async def tag(self, texts: Sequence[str]) -> list[TagPrediction] | None:
        """The offline tagger's confident tags of a conversation's text; None: no answer."""
        found = await self._ask({"op": "tag", "texts": list(texts)})
        if found is None:
            return None
        try:
            return [TagPrediction(str(name), float(confidence)) for name, confidence in found["tags"]]
        except (KeyError, TypeError, ValueError):
            self._failed("an unreadable answer")
            return None

    async def sentiment(self, comment: str, within: float = ANSWER_TIMEOUT) -> Sentiment | None:
        """The offline sentiment of a feedback comment; None: no answer (within `within` seconds)."""
        found = await self._ask({"op": "sentiment", "comment": comment}, within)
        if found is None:
            return None
        label = next((lab for lab in LABELS if lab == found.get("label")), None)
        score = found.get("score")
        if label is None or not isinstance(score, int | float):
            self._failed("an unreadable answer")
            return None
        return Sentiment(label, float(score))

    async def sentiment_now(self, comment: str) -> Sentiment | None:
        """The sentiment of a comment a request is saving: the same, with a request's patience."""
        return await self.sentiment(comment, REQUEST_ANSWER_TIMEOUT)

    async def _ask(self, request: dict[str, Any], within: float = ANSWER_TIMEOUT) -> dict[str, Any] | None:
        if self.owner is not None:
            try:
                self.owner.ensure_started()
            except OSError as exc:  # cannot start a process (no memory, no pids): no answer, not a failure
                self._failed(f"cannot start: {exc}")
                return None
        try:
            starting = self.owner is not None and self.owner.age() < STARTING_SECONDS  # on a busy machine
            reader, writer = await self._connect(within if starting else min(CONNECT_TIMEOUT, within))
        except (OSError, TimeoutError) as exc:
            self._failed(type(exc).__name__)
            return None
        try:
            writer.write(encode_frame(request))
            await writer.drain()
            found = await asyncio.wait_for(read_frame(reader), within)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self._failed(type(exc).__name__)
            return None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if "error" in found:
            self._failed(str(found["error"])[:200])
            return None
        if self._down:
            self._down = False
            log.info("tagger process answering again")
        return found

    async def _connect(self, within: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the process, waiting up to `within` seconds for it to listen (it may be starting,
        or restarting after a death)."""
        deadline = time.monotonic() + within
        while True:
            try:
                return await asyncio.wait_for(
                    asyncio.open_unix_connection(self.socket_path, limit=MAX_FRAME), within
                )
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)

    def _failed(self, reason: str) -> None:  # callers then return None: no answer
        self.failures += 1
        if not self._down:
            self._down = True
            log.warning(
                "tagger process unavailable: automatic tags are skipped and comment sentiments filled in "
                "later until it answers again",
                extra={"reason": reason},
            )
        return None


class TaggerProcess:
    """Starts the tagger process on a private socket, and starts it again whenever it dies, until stopped.

    A thread waits on the child (so this works the same in `synapgate serve`'s supervising process and in an
    app's lifespan); `ensure_started` is cheap and idempotent."""

    def __init__(self, env: dict[str, str] | None = None, *, warm: bool = True) -> None:
        self._dir = tempfile.mkdtemp(prefix="synapgate-tagger-")  # private (0700): only we can connect
        self.socket_path = os.path.join(self._dir, "tagger.sock")
        self.env = env
        # Load the models at start (automatic tags on: the first exchanges should not wait), else on the first
        # request (a feedback comment's sentiment): a gateway without automatic tags may never need them.
        self.warm = warm
        self.restarts = 0
        self.spawned_at = 0.0  # time.monotonic() of the latest start
        self.popen: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._watcher: threading.Thread | None = None

    def ensure_started(self) -> None:
        if self._watcher is not None or self._stopping:
            return
        with self._lock:
            if self._watcher is None and not self._stopping:
                self._spawn()
                self._watcher = threading.Thread(target=self._watch, name="tagger-process", daemon=True)
                self._watcher.start()

    def _spawn(self) -> None:
        self.popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.tagger_process",
                "--socket",
                self.socket_path,
                "--parent",
                str(os.getpid()),
                *(["--warm"] if self.warm else []),
            ],
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        self.spawned_at = time.monotonic()
        log.info("tagger process started", extra={"pid": self.popen.pid})

    def age(self) -> float:
        """Seconds since the process was (last) started; infinite before it ever was."""
        return time.monotonic() - self.spawned_at if self.popen is not None else float("inf")

    def _watch(self) -> None:
        quick_deaths = 0
        while True:
            popen = self.popen
            assert popen is not None
            started = time.monotonic()
            code = popen.wait()
            with self._lock:
                if self._stopping:
                    return
            quick_deaths = 0 if time.monotonic() - started >= STABLE_SECONDS else quick_deaths + 1
            delay = RESTART_DELAYS[min(quick_deaths, len(RESTART_DELAYS) - 1)]
            log.warning(
                "tagger process exited; starting it again",
                extra={"pid": popen.pid, "exit_code": code, "restart_in_seconds": delay},
            )
            time.sleep(delay)
            with self._lock:
                if self._stopping:
                    return
                try:
                    self._spawn()
                except OSError as exc:  # tried again (the old process's wait returns at once), backing off
                    log.error("tagger process could not be started", extra={"error": str(exc)})
                    continue
                self.restarts += 1

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            popen = self.popen
        if popen is not None and popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(5)
        if self._watcher is not None:
            self._watcher.join(15)
        shutil.rmtree(self._dir, ignore_errors=True)


# -- the tagger process itself ---------------------------------------------------------------------------


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """One request, computed with the offline models (loaded on first use: this process's only job)."""
    op = request.get("op")
    if op == "tag":
        from insights.tagging import default_tagger

        texts = [str(t) for t in request.get("texts", [])]
        return {"tags": [[p.tag, p.confidence] for p in default_tagger().tag(texts)]}
    if op == "sentiment":
        from insights.sentiment import sentiment

        mood = sentiment(str(request.get("comment", "")))
        return {"label": mood.label, "score": mood.score}
    if op == "ping":
        return {"pid": os.getpid()}
    return {"error": f"unknown op {op!r}"}


def warm() -> None:
    """Load both models before the first request needs them."""
    answer({"op": "tag", "texts": ["warm up"]})
    answer({"op": "sentiment", "comment": "warm up"})


async def serve(socket_path: str, parent: int, *, warm_up: bool = True) -> None:
    compute = ThreadPoolExecutor(1, thread_name_prefix="models")  # one at a time: the models are CPU-bound
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                try:
                    reply = await loop.run_in_executor(compute, answer, request)
                except Exception as exc:  # a bad input must not take the process down
                    log.exception("tagger request failed")
                    reply = {"error": type(exc).__name__}
                writer.write(encode_frame(reply))
                await writer.drain()
        except (ValueError, ConnectionError):
            return
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)  # a predecessor's, when it was killed
    server = await asyncio.start_unix_server(handle, path=socket_path, limit=MAX_FRAME)
    if warm_up:
        loop.run_in_executor(compute, warm)  # queued first: requests wait behind it, none fails for it
    async with server:
        # No event says that the parent died (even killed): its pid changes to a reaper's; then this goes too.
        while os.getppid() == parent:  # noqa: ASYNC110
            await asyncio.sleep(1.0)
    os._exit(0)  # at once: not after the compute thread's current job (a model load takes seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.tagger_process")
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    parser.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--warm", action="store_true", help="load the models at start, not on first use")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # A Ctrl-C in the terminal reaches the whole process group: the gateway stops this process itself (or
    # this process notices it is gone), so that the interrupt is not mistaken for a death to restart from.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(serve(args.socket, args.parent or os.getppid(), warm_up=args.warm))


if __name__ == "__main__":
    main()
