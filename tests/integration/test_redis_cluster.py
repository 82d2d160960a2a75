"""The Redis ledger on a Redis Cluster (issue 15): a local three-node cluster that this module starts, the
real gateway (in-process, ASGI) and ledger on PostgreSQL + that cluster.

Every user's keys carry the user's hash tag (credit and the key's and user's limit counters: one slot, one
script); a workspace's limit keys carry the workspace's, so a limited request of a workspace with limits runs
a second script on that slot (storage/billing/ledger/redis.py). The tests check that users really land on
different nodes, that credit and limits are exact there, that a workspace's limits hold across users on
different nodes under concurrency, and that the sweep, readiness and sessions reach every node.

The nodes listen on free ports of SYNAPGATE_TEST_CLUSTER_PORTS (default 28200-28299; each node takes two: its
client port and its cluster bus port, which Redis would otherwise put 10000 above the client port).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MovedError

from config import Settings
from gateway.dashboard.sessions import RedisSessionStore
from pricing.money import format_usd
from storage.accounts import service
from storage.billing.ledger.base import HotMove, InsufficientCredit
from storage.billing.ledger.entries import post_entry
from storage.billing.ledger.factory import redis_for
from storage.billing.ledger.limits import LimitExceeded, LimitRequest, ScopeLimits, period_tag
from storage.billing.ledger.redis import RedisLedger
from storage.billing.reconcile import reconcile
from tests.integration.conftest import Gateway
from tests.integration.helpers import ADMIN, api, error_of, wait_for_fresh_window, worst_case_nano

MESSAGES = [{"role": "user", "content": "cluster"}]
MAX_TOKENS = 50
NODES = 3


def _port_range() -> range:
    first, _, last = os.environ.get("SYNAPGATE_TEST_CLUSTER_PORTS", "28200-28299").partition("-")
    return range(int(first), int(last) + 1)


def _free_ports(count: int) -> list[int]:
    """`count` ports of the range that nothing listens on (nor binds) now."""
    import socket

    found: list[int] = []
    for port in _port_range():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    pytest.fail(f"fewer than {count} free ports in {_port_range()} for the test cluster")


class LocalCluster:
    """Three `redis-server --cluster-enabled yes` processes (no persistence) in a temporary directory, joined
    by `redis-cli --cluster create` (no replicas); `close` kills them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        ports = _free_ports(2 * NODES)
        self.ports, self.bus_ports = ports[:NODES], ports[NODES:]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def node(self, port: int) -> redis_sync.Redis:
        return redis_sync.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def _spawn(self, port: int, bus: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "redis-server",
                "--port", str(port),
                "--cluster-port", str(bus),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.workdir / f"nodes-{port}.conf"),
                "--cluster-node-timeout", "2000",
                # a node down leaves the others serving their slots (the default "yes" stops the whole
                # cluster after the node timeout): users on live nodes are served, the dead node's get 503
                "--cluster-require-full-coverage", "no",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(self.workdir),
                "--logfile", str(self.workdir / f"redis-{port}.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> None:
        self.processes = [
            self._spawn(port, bus) for port, bus in zip(self.ports, self.bus_ports, strict=True)
        ]
        for port in self.ports:
            self._wait(lambda p=port: bool(self.node(p).ping()), f"redis-server on {port}")
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.wait_ok()

    def wait_ok(self) -> None:
        """Until every node says cluster_state:ok (every slot served)."""
        for port in self.ports:
            self._wait(lambda p=port: b"cluster_state:ok" in self.node(p).execute_command("CLUSTER", "INFO"),
                       f"cluster_state:ok on {port}")  # fmt: skip

    def kill(self, index: int) -> None:
        self.processes[index].kill()
        self.processes[index].wait(10)

    def restart(self, *indexes: int) -> None:
        """Start killed nodes again: each rejoins with its node id and slots (nodes-<port>.conf), empty."""
        for index in indexes:
            self.processes[index] = self._spawn(self.ports[index], self.bus_ports[index])
        self.wait_ok()

    def _wait(self, ready: Any, what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except redis_sync.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what} (logs in {self.workdir})")
            time.sleep(0.05)

    def flush(self) -> None:
        for port in self.ports:
            client = self.node(port)
            try:
                client.flushall()
            finally:
                client.close()

    def holders(self, key: str) -> list[int]:
        """The ports of the nodes that hold `key`, asked of each node itself (not of the client's slot map):
        the node serving the key's slot (CLUSTER KEYSLOT) answers EXISTS, the others redirect (MOVED)."""
        found = []
        for port in self.ports:
            client = self.node(port)
            try:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                try:
                    if client.exists(key):
                        found.append(port)
                except MovedError as moved:
                    assert moved.slot_id == slot, moved
            finally:
                client.close()
        return found

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    missing = [tool for tool in ("redis-server", "redis-cli") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: the Redis Cluster tests start their own cluster")
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def backend() -> str:
    return "postgres+redis"


@pytest.fixture
def redis_url(local_cluster: LocalCluster) -> str:
    local_cluster.flush()
    return local_cluster.url


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN, "redis_cluster": True}


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
async def ledger(gateway: Gateway) -> AsyncIterator[RedisLedger]:
    assert isinstance(gateway.ledger, RedisLedger) and isinstance(gateway.ledger._redis, RedisCluster)
    yield gateway.ledger


def acct_key(user: uuid.UUID) -> str:
    return f"sg:{{{user}}}:acct"


async def users_on_distinct_nodes(
    gw: Gateway, cluster: LocalCluster, count: int, credits_usd: str = "5"
) -> list[tuple[uuid.UUID, str]]:
    """`count` seeded users (id, key) whose hash tags live on `count` different nodes."""
    picked: dict[int, tuple[uuid.UUID, str]] = {}
    for _ in range(40):
        user_id, key = await gw.seed_user(credits_usd)
        await gw.ledger.available(user_id)  # loads the snapshot: its key now exists on the user's node
        (port,) = cluster.holders(acct_key(user_id))
        picked.setdefault(port, (user_id, key))
        if len(picked) == count:
            return list(picked.values())
    pytest.fail(f"40 users did not spread over {count} nodes")


async def settle(gw: Gateway, reservation: Any, cost: int, tokens: int | None = None) -> None:
    """What the recorder does: post the debit, then move the hot copy (and settle limit holds) after it."""
    async with gw.engine.begin() as conn:
        posted = await post_entry(
            conn,
            user_id=reservation.user_id,
            type="usage",
            amount_nano=-cost,
            idempotency_key=f"usage:{reservation.request_id}",
            request_id=reservation.request_id,
        )
    limits_actual = (cost, tokens) if tokens is not None else None
    await gw.ledger.after_commit(
        [HotMove(reservation.user_id, reservation, -cost, posted.version, limits_actual)]
    )


async def new_key(
    gw: Gateway, user_id: uuid.UUID, workspace_id: str | None = None, **limits: Any
) -> tuple[str, str]:
    """A key with limits: (plaintext, id)."""
    body: dict[str, Any] = {"user_id": str(user_id), **limits}
    if workspace_id is not None:
        body["workspace_id"] = workspace_id
    created = await api(gw, "POST", "/keys", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["key"]), str(created.json()["id"])


async def chat(gw: Gateway, key: str) -> httpx.Response:
    return await gw.request(
        "POST",
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": MAX_TOKENS},
    )


def test_settings_select_a_cluster_explicitly() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:28200", redis_cluster=True)
    assert isinstance(redis_for(settings), RedisCluster)
    assert not isinstance(redis_for(Settings(redis_url="redis://127.0.0.1:28200")), RedisCluster)


def test_every_node_connection_is_the_gateways_and_a_closed_transport_is_an_outage(
    local_cluster: LocalCluster,
) -> None:
    """The cluster client's connections to all three nodes are the gateway's class (hiredis packing), so
    uvloop's RuntimeError for a write on a transport a node closed reaches the ledger as redis-py's
    ConnectionError — an outage it heals from — not as a bug answered 500. Produced for real under uvloop."""
    uvloop = pytest.importorskip("uvloop")
    from redis.exceptions import ConnectionError as RedisConnectionError

    from storage.redis_connection import HiredisPackedConnection

    async def scenario() -> None:
        client = redis_for(Settings(redis_url=local_cluster.url, redis_cluster=True))
        assert isinstance(client, RedisCluster)
        try:
            for i in range(30):  # keys on every node's slots
                await client.set(f"sg:probe:{i}", i)
            nodes = client.get_nodes()
            assert len(nodes) == 3
            connections = [c for node in nodes for c in node._connections]
            assert connections and all(type(c) is HiredisPackedConnection for c in connections)
            conn = next(c for c in connections if c.is_connected)
            conn._writer.transport.close()  # the node's kill, as the client's transport sees it
            await asyncio.sleep(0)
            with pytest.raises(RedisConnectionError):
                await conn.send_packed_command(conn.pack_command("PING"), check_health=False)
            assert await client.get("sg:probe:0") == b"0"  # the client connects again
        finally:
            await client.aclose()

    uvloop.run(scenario())


async def test_credit_is_exact_for_users_on_three_nodes(
    gateway: Gateway, ledger: RedisLedger, local_cluster: LocalCluster
) -> None:
    users = await users_on_distinct_nodes(gateway, local_cluster, NODES)
    for user_id, _key in users:
        start = await ledger.available(user_id)
        first = await ledger.reserve(user_id, f"r-{uuid.uuid4()}", 600)
        second = await ledger.reserve(user_id, f"r-{uuid.uuid4()}", 400)
        assert await ledger.available(user_id) == start - 1_000
        with pytest.raises(InsufficientCredit):
            await ledger.reserve(user_id, f"r-{uuid.uuid4()}", start)
        await settle(gateway, first, 250)  # below its reservation: the rest comes back
        await ledger.release(second)
        assert await ledger.available(user_id) == start - 250
        assert await ledger.hot_balance(user_id) == start - 250
    report = await reconcile(gateway.engine, ledger)
    assert report.mismatches == [] and report.users >= NODES


async def test_a_keys_rpm_limit_admits_exactly_n_on_its_users_slot(
    gateway: Gateway, ledger: RedisLedger, local_cluster: LocalCluster
) -> None:
    user_id, _ = await gateway.seed_user("5")
    key, key_id = await new_key(gateway, user_id, rpm_limit=5, tpm_limit=100_000)
    wait_for_fresh_window(8.0)
    minute = int(datetime.now(UTC).timestamp()) // 60
    answers = [await chat(gateway, key) for _ in range(8)]
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) == 5, [r.status_code for r in answers]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in ok] == ["4", "3", "2", "1", "0"]
    for r in answers[5:]:
        assert error_of(r, 429)["code"] == "rate_limit_exceeded"
    detail = (await api(gateway, "GET", f"/keys/{key_id}")).json()
    assert detail["limits"]["requests"] == 5  # read back from the user's slot (window_usage with its owner)
    counter = f"sg:{{{user_id}}}:lim:k:{key_id}:r:{minute}"
    assert local_cluster.holders(counter) == local_cluster.holders(acct_key(user_id))  # one slot, one script


async def test_a_workspace_budget_holds_across_users_on_different_nodes(
    gateway: Gateway, ledger: RedisLedger, local_cluster: LocalCluster
) -> None:
    worst = await worst_case_nano(gateway, MESSAGES, MAX_TOKENS)
    (first, _), (second, _) = await users_on_distinct_nodes(gateway, local_cluster, 2)
    async with gateway.engine.begin() as conn:
        team = await service.create_workspace(conn, "team", first, [second])
    budget = worst * 4 + worst // 2
    updated = await api(
        gateway,
        "PATCH",
        f"/workspaces/{team.id}",
        json={"budget_usd": format_usd(budget), "budget_period": "day"},
    )
    assert updated.status_code == 200, updated.text
    # The keys have limits too (never reached): each request then settles on both slots, the user's and the
    # workspace's.
    created = [
        await new_key(gateway, u, str(team.id), tpm_limit=10**6, budget_usd="100", budget_period="month")
        for u in (first, second)
    ]
    keys = [key for key, _id in created]
    answers = await asyncio.gather(*(chat(gateway, keys[i % 2]) for i in range(30)))
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) >= 4, [r.status_code for r in answers]  # at least the worst cases that fit at once
    for r in answers:
        if r.status_code != 200:
            assert error_of(r, 429)["code"] == "budget_exceeded"
    charged = int(
        await gateway.scalar(
            "SELECT COALESCE(SUM(charged_nano), 0) FROM usage_logs WHERE workspace_id = :w", w=str(team.id)
        )
    )
    assert 0 < charged <= budget  # no overshoot, though the two users' scripts ran on different nodes
    served_by = await gateway.scalar(
        "SELECT COUNT(DISTINCT user_id) FROM usage_logs WHERE workspace_id = :w", w=str(team.id)
    )
    assert served_by == 2
    # The workspace's budget settled exactly on its own slot: nothing held, its spend is the ledger's.
    now = datetime.now(UTC)
    budget_key = f"sg:lim:{{w:{team.id}}}:b:{period_tag('day', now)}"
    for _ in range(50):  # the last answers' holds settle right after their records commit
        state = await ledger._redis.hgetall(budget_key)
        if int(state.get(b"held", 0)) == 0:
            break
        await asyncio.sleep(0.05)
    assert int(state[b"held"]) == 0 and int(state[b"spent"]) == charged
    spent = (await api(gateway, "GET", f"/workspaces/{team.id}/limits")).json()["limits"]["spent_nano"]
    assert spent == charged
    # Every post-commit move ran: each reservation closed, each debit in the hot copy.
    for user in (first, second):
        assert int(await ledger._redis.hget(acct_key(user), "held")) == 0
        balance = await gateway.scalar(
            "SELECT balance_nano FROM credit_accounts WHERE user_id = :u", u=str(user)
        )
        assert await ledger.hot_balance(user) == int(balance)
    for user, (_key, key_id) in zip((first, second), created, strict=True):  # and the keys' holds settled
        by_key = await gateway.scalar(
            "SELECT COALESCE(SUM(charged_nano), 0) FROM usage_logs WHERE api_key_id = :k", k=key_id
        )
        key_budget = f"sg:{{{user}}}:lim:k:{key_id}:b:{period_tag('month', now)}"
        assert local_cluster.holders(key_budget) == local_cluster.holders(acct_key(user))
        state = await ledger._redis.hgetall(key_budget)
        assert int(state[b"held"]) == 0 and int(state[b"spent"]) == int(by_key) > 0


async def test_workspace_rpm_is_exact_under_concurrency_and_a_refused_hold_is_undone(
    gateway: Gateway, ledger: RedisLedger, local_cluster: LocalCluster
) -> None:
    """40 concurrent reservations of two users on different nodes against a workspace RPM of 6: exactly 6
    are admitted. Then a request the user's script refuses (credit) leaves no trace in the workspace."""
    (first, _), (second, _) = await users_on_distinct_nodes(gateway, local_cluster, 2)
    now = datetime.now(UTC)
    ledger.clock = lambda: now  # one minute window for the whole test, however long it takes
    workspace = uuid.uuid4()
    scope = ScopeLimits(f"w:{workspace}", rpm=6, budget_nano=10**12, budget_period="day")
    limits = LimitRequest((scope,), tokens=10)

    async def attempt(i: int) -> bool:
        try:
            await ledger.reserve((first, second)[i % 2], f"r-{i}-{uuid.uuid4()}", 1_000, limits)
            return True
        except LimitExceeded:
            return False

    admitted = sum(await asyncio.gather(*(attempt(i) for i in range(40))))
    assert admitted == 6
    minute = int(now.timestamp()) // 60
    window = f"sg:lim:{{w:{workspace}}}:r:{minute}"
    budget_key = f"sg:lim:{{w:{workspace}}}:b:{period_tag('day', now)}"
    assert int(await ledger._redis.get(window)) == 6
    assert int(await ledger._redis.hget(budget_key, "held")) == 6_000
    assert await ledger.renew_lease() == 6  # one pipeline over both users' and the workspace's nodes

    poor, _ = await gateway.seed_user("0.000001")  # 1000 nano-USD
    roomy = LimitRequest(
        (ScopeLimits(f"w:{workspace}", rpm=100, budget_nano=10**12, budget_period="day"),), 10
    )
    with pytest.raises(InsufficientCredit):
        await ledger.reserve(poor, f"r-{uuid.uuid4()}", 5_000, roomy)
    assert int(await ledger._redis.get(window)) == 6  # the workspace's hold was released again
    assert int(await ledger._redis.hget(budget_key, "held")) == 6_000
    held = await ledger.reserve(poor, f"r-{uuid.uuid4()}", 1_000, roomy)
    assert int(await ledger._redis.get(window)) == 7
    await settle(gateway, held, 700, 10)
    assert int(await ledger._redis.hget(budget_key, "held")) == 6_000
    assert await ledger.available(poor) == 300


async def test_the_expiry_sweep_finds_reservations_on_every_node(
    gateway: Gateway, ledger: RedisLedger, local_cluster: LocalCluster
) -> None:
    users = await users_on_distinct_nodes(gateway, local_cluster, NODES)
    ledger._lease_ms = 300
    for user_id, _key in users:
        await ledger.reserve(user_id, f"dead-{user_id}", 1_000)
    ledger._open.clear()  # the instance dies: nothing renews the leases
    assert await ledger.reservation_counts() == (NODES, 0)
    await asyncio.sleep(0.5)
    assert await ledger.reservation_counts() == (NODES, NODES)
    assert await ledger.release_orphans() == NODES
    assert await ledger.reservation_counts() == (0, 0)


async def test_readiness_and_sessions_on_the_cluster(gateway: Gateway, local_cluster: LocalCluster) -> None:
    ready = await gateway.request("GET", "/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"
    client = redis_for(gateway.settings)
    assert client is not None
    try:
        store = RedisSessionStore(client)
        session_id, session = await store.create(uuid.uuid4(), None, None)
        assert await store.get(session_id) == session
        await store.delete(session_id)
        assert await store.get(session_id) is None
    finally:
        await client.aclose()


async def test_a_dead_node_fails_readiness_and_its_users_get_503(
    gateway: Gateway, ledger: RedisLedger, local_cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Readiness pings every primary (not only the URL's node), and a request whose user lives on a dead node
    is refused with 503 + Retry-After, not 500 (an outage, invariant 8), while users on the live nodes are
    served; the outage is logged once, "up" only when every node answers again (no flapping)."""
    caplog.set_level(logging.INFO, logger="synapgate.outage")
    users = await users_on_distinct_nodes(gateway, local_cluster, NODES)
    victim = next(i for i, (user, _key) in enumerate(users) if local_cluster.holders(acct_key(user)) != [
        local_cluster.ports[0]])  # fmt: skip
    (user, key) = users[victim]
    index = local_cluster.ports.index(local_cluster.holders(acct_key(user))[0])
    assert index != 0  # the URL's node stays up: the client still reaches the cluster
    alive = next(k for u, k in users if local_cluster.holders(acct_key(u)) == [local_cluster.ports[0]])
    local_cluster.kill(index)
    try:
        # at once: each waits out the client's connection retries (~2 s)
        ready, refused = await asyncio.gather(gateway.request("GET", "/ready"), chat(gateway, key))
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["redis"].startswith("unavailable")
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        for _ in range(2):  # a user on a live node served, then the dead node's user refused again
            served = await chat(gateway, alive)
            assert served.status_code == 200, served.text
            again = await chat(gateway, key)
            assert again.status_code == 503, again.text
        assert [getattr(r, "state", None) for r in caplog.records] == ["down"]  # once, and still down
    finally:
        local_cluster.restart(index)
    ready = await gateway.request("GET", "/ready")
    assert ready.status_code == 200, ready.text
    for _ in range(100):  # the watch's probe (every primary, every 0.25 s) sees the node back
        if [getattr(r, "state", None) for r in caplog.records] == ["down", "up"]:
            break
        await asyncio.sleep(0.05)
    assert [getattr(r, "state", None) for r in caplog.records] == ["down", "up"]


async def test_a_cluster_wholly_down_after_a_commit_queues_the_move_and_heals(
    gateway: Gateway, ledger: RedisLedger, local_cluster: LocalCluster
) -> None:
    """With every node down the cluster client raises RedisClusterException (not a RedisError): the
    committed debit's hot move must still be queued for healing, not lost; the nodes back, it is exact."""
    user_id, _ = await gateway.seed_user("5")
    start = await ledger.available(user_id)
    held = await ledger.reserve(user_id, f"r-{uuid.uuid4()}", 1_000)
    for index in range(NODES):
        local_cluster.kill(index)
    try:
        await settle(gateway, held, 700)  # the commit stands; the move waits for Redis
        assert ledger.pending_moves == 1
    finally:
        local_cluster.restart(*range(NODES))
    for _ in range(100):  # the queue retries with backoff (at most 1 s apart)
        if ledger.pending_moves == 0:
            break
        await asyncio.sleep(0.05)
    assert ledger.pending_moves == 0
    assert (
        await ledger.available(user_id) == start - 700
    )  # reloaded from the ledger (the nodes came back empty)
