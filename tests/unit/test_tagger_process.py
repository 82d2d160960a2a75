"""The tagger process (gateway/tagger_process.py): the offline models answer over its socket, the client
degrades to None when nothing answers, and a killed process is started again."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Iterator

import pytest

from gateway.tagger_process import TaggerClient, TaggerProcess
from insights.labels import Sentiment, TagPrediction
from tests.environment import in_a_fresh_interpreter


@pytest.fixture(scope="module")
def tagger() -> Iterator[TaggerProcess]:
    process = TaggerProcess()
    yield process
    process.stop()


async def test_the_process_tags_and_judges_like_the_offline_models(tagger: TaggerProcess) -> None:
    from insights.sentiment import sentiment
    from insights.tagging import default_tagger

    client = TaggerClient(tagger.socket_path, owner=tagger)  # started on first use
    text = ["Write a Python function that parses a CSV file and raises a ValueError on a bad row"]
    tags = await client.tag(text)
    assert tags == default_tagger().tag(text) and [t.tag for t in tags] == ["coding"]
    assert all(isinstance(t, TagPrediction) for t in tags)
    comment = "Terrible answer, completely wrong and useless."
    mood = await client.sentiment(comment)
    assert isinstance(mood, Sentiment) and mood == sentiment(comment) and mood.label == "negative"
    assert client.failures == 0


async def test_no_process_answering_gives_none_quickly_and_is_counted(tmp_path: os.PathLike[str]) -> None:
    client = TaggerClient(os.path.join(tmp_path, "nobody.sock"))
    started = time.monotonic()
    assert await client.tag(["write a poem"]) is None
    assert await client.sentiment("great", within=0.3) is None
    assert client.failures == 2
    assert time.monotonic() - started < 12  # the connect wait is bounded (5 s, then 0.3 s)


async def test_a_killed_process_is_started_again(tagger: TaggerProcess) -> None:
    client = TaggerClient(tagger.socket_path, owner=tagger)
    assert await client.sentiment("Excelente resposta, muito obrigado!") is not None
    assert tagger.popen is not None
    first = tagger.popen.pid
    os.kill(first, signal.SIGKILL)
    for _ in range(300):  # restarted after its first delay (0.5 s), then loads its models again
        if tagger.popen.pid != first:
            break
        await asyncio.sleep(0.1)
    assert tagger.popen.pid != first and tagger.restarts == 1
    mood = await client.sentiment("Excelente resposta, muito obrigado!")
    assert mood is not None and mood.label == "positive"


def test_the_process_exits_with_its_parent() -> None:
    """A tagger whose gateway was killed (no stop) does not linger: it watches its parent."""
    import subprocess
    import sys

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from gateway.tagger_process import TaggerProcess; "
            "p = TaggerProcess(); p.ensure_started(); print(p.popen.pid, p.socket_path, flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    pid, socket_path = parent.stdout.readline().split()
    child = int(pid)
    parent.kill()
    parent.wait(10)
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the tagger process outlived its parent")
    finally_dir = os.path.dirname(socket_path)
    shutil.rmtree(finally_dir, ignore_errors=True)  # its private folder: the killed parent left it


def test_the_serving_side_imports_no_model_library() -> None:
    """Everything a serving worker loads — the app, the chat path, the tagger-model path and its prompts, the
    tagger client — leaves scikit-learn, SciPy and NumPy unimported (a fresh interpreter)."""
    code = (
        "import sys, gateway.app, gateway.chat.llm_insights, gateway.tagger_process\n"
        "from insights.labels import DEFAULT_TAXONOMY\n"
        "from insights.llm_prompts import build_tagging_messages, parse_tagging_reply\n"
        "build_tagging_messages(['write a poem'], DEFAULT_TAXONOMY)\n"
        "import asyncio\n"
        "from gateway.chat.llm_insights import LlmInsights\n"
        "model = LlmInsights.__new__(LlmInsights)\n"
        "async def no_answer(*args): return None\n"
        "model._ask = no_answer\n"
        "assert asyncio.run(model.tag(['write a poem'])) is None  # its imports ran\n"
        "# the jobs, which run in the serving worker on SQLite: anomalies and churn predictions\n"
        "import storage.jobs.runner, storage.insights.service\n"
        "from datetime import UTC, datetime, timedelta\n"
        "from insights.anomaly import HourlyPoint, detect_anomalies\n"
        "from insights.churn import DailyActivity, UserHistory, predict_churn\n"
        "now = datetime(2026, 12, 1, tzinfo=UTC)\n"
        "points = [HourlyPoint('user', 'u', now - timedelta(hours=h), 10**9, 9) for h in range(800)]\n"
        "detect_anomalies(points, now - timedelta(hours=24), now)\n"
        "day = DailyActivity(now.date(), 3, 10**6)\n"
        "predict_churn([UserHistory('u', now.date() - timedelta(days=60), 10**9, (day,))], now.date())\n"
        "print(sorted(m for m in ('sklearn', 'scipy', 'numpy') if m in sys.modules))\n"
    )
    assert in_a_fresh_interpreter(code, timeout=120).strip() == "[]"


async def test_a_process_that_cannot_be_started_is_no_answer_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = TaggerProcess()

    def cannot_fork(self: TaggerProcess) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(TaggerProcess, "_spawn", cannot_fork)
    client = TaggerClient(process.socket_path, owner=process)
    try:
        assert await client.sentiment("great", within=0.2) is None and client.failures == 1
        assert process.popen is None
    finally:
        process.stop()


def _has_sklearn(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "/sklearn/" in maps.read()


async def test_without_warm_up_the_models_load_on_the_first_request_only() -> None:
    """A gateway without automatic tags (`warm=False`) leaves its tagger process light until a comment's
    sentiment is asked for; with them, the process loads its models at start."""
    cold, warm = TaggerProcess(warm=False), TaggerProcess(warm=True)
    try:
        cold.ensure_started()
        warm.ensure_started()
        assert cold.popen is not None and warm.popen is not None
        deadline = time.monotonic() + 60
        while not _has_sklearn(warm.popen.pid):
            assert time.monotonic() < deadline, "the warm process never loaded its models"
            await asyncio.sleep(0.1)
        assert not _has_sklearn(cold.popen.pid)  # the warm one had as long to load, unasked
        mood = await TaggerClient(cold.socket_path, owner=cold).sentiment("Thanks, perfect answer!")
        assert mood is not None and mood.label == "positive"
        assert _has_sklearn(cold.popen.pid)
    finally:
        cold.stop()
        warm.stop()
