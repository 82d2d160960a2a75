"""The hiredis-packed Redis connection (storage/redis_connection.py): the same wire bytes as redis-py's own
packer for every kind of argument the gateway sends, the same errors for what Redis cannot take, and a real
server answering commands, scripts and pipelines through it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from storage.redis_connection import HiredisPackedConnection, redis_from_url

pytestmark = pytest.mark.integration

CASES: list[tuple[Any, ...]] = [
    ("SET", "sg:{7c9e6679-7425-40de-944b-e07fc1f90ae7}:acct", 123456789012),
    ("EVALSHA", "a" * 40, 2, "k1", b"k2", -5, 0, 2**62, "é ünïcode ✓", b"\x00\xff raw"),
    ("CONFIG GET", "maxmemory"),  # a command name with a literal argument is split
    (b"CLIENT LIST",),
    ("HSET", "h", "f", 1.5, "g", 0.1, "i", 1e20, "j", -2.5e-7, "k", float("inf")),
    ("SET", "k", memoryview(b"view")),
    ("SET", "big", "x" * 10_000),  # above redis-py's 6,000-byte chunking
    ("ZADD", "z", 1700000000123, "req_1"),
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: str(a[0]))
def test_the_wire_bytes_are_redis_pys_own(args: tuple[Any, ...]) -> None:
    ours = b"".join(HiredisPackedConnection().pack_command(*args))
    theirs = b"".join(bytes(part) for part in Connection().pack_command(*args))
    assert ours == theirs


@pytest.mark.parametrize("bad", [None, {"a": 1}, [1, 2], True])
def test_what_redis_cannot_take_is_refused_as_redis_py_refuses_it(bad: Any) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        HiredisPackedConnection().pack_command("SET", "k", bad)


async def test_a_real_server_answers_through_it(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    try:
        assert await client.set("k", 42) and await client.get("k") == b"42"
        script = client.register_script("return {KEYS[1], ARGV[1], #ARGV}")
        assert await script(keys=["sg:{u}:x"], args=[7, "é"]) == [
            b"sg:{u}:x",
            b"7",
            2,
        ]  # EVALSHA, NOSCRIPT load
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset("h", mapping={"a": 1, "b": "two"}).hgetall("h").incrby("n", 5)
            assert await pipe.execute() == [2, {b"a": b"1", b"b": b"two"}, 5]
        assert (await client.config_get("maxmemory")).keys() == {"maxmemory"}
        conn = client.connection_pool.connection_class
        assert conn is HiredisPackedConnection
    finally:
        await client.aclose()


def test_a_write_on_a_connection_the_server_closed_is_a_redis_connection_error(redis_url: str) -> None:
    """uvloop's RuntimeError on a closed transport becomes redis-py's ConnectionError (an outage to the ledger
    and the API), as an OSError there would: produced for real under uvloop, the gateway's event loop."""
    uvloop = pytest.importorskip("uvloop")
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def write_on_a_closed_connection() -> None:
        client = redis_from_url(redis_url)
        try:
            conn = await client.connection_pool.get_connection()
            conn._writer.transport.close()  # the server's kill, as the client's transport sees it
            await asyncio.sleep(0)
            with pytest.raises(RedisConnectionError):
                await conn.send_packed_command(conn.pack_command("PING"), check_health=False)
            await client.connection_pool.release(conn)
            assert await client.ping()  # the pool connects again
        finally:
            await client.aclose()

    uvloop.run(write_on_a_closed_connection())
