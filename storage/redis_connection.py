"""The Redis connection of the gateway: redis-py's asyncio connection with its commands packed by hiredis.

redis-py parses replies with hiredis when it is installed, but its asyncio connection still packs every
command in Python: per argument an encode, a length and two byte joins — ~8,000 CPU instructions an
argument (callgrind). The ledger's scripts carry 7 arguments (credit only) to 19 and more (credit and the
limits of two scopes), so the packing grew with the limits. `hiredis.pack_command` does the same in C
(~1,800 an argument): an EVALSHA with 4 keys and 3 arguments went from 405,701 to 337,543 instructions a
call, one with 14 keys and 17 arguments from 615,215 to 391,227. redis-py's synchronous client packs with
hiredis the same way; this is that packer for the asyncio one. Where the URL names another connection class
(`rediss://` TLS, `unix://` sockets) that class is used, as before. A cluster client (SYNAPGATE_REDIS_CLUSTER)
gets the same class too (`redis_cluster_from_url`: its constructor fixes redis-py's own, so the class is set
on the connection settings its nodes are made from), except over TLS.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError

from storage.outage import CLOSED_TRANSPORT


class HiredisPackedConnection(Connection):
    """An asyncio connection whose commands hiredis packs (the wire bytes are redis-py's own, byte for
    byte)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # A command name with literal arguments ("CONFIG GET") is split, as redis-py does.
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # a type redis cannot take (None, a dict): redis-py's error
            raise DataError(str(exc)) from exc

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # uvloop raises RuntimeError for a write on a transport the server has closed (e.g. the connect-time
        # command on a socket `CLIENT KILL` just cut); redis-py wraps only OSError, so the ledger would take
        # it for a bug. It is a lost connection: redis-py has disconnected already; say so in its own terms.
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:
            if not str(exc).endswith(CLOSED_TRANSPORT):
                raise
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc


def redis_from_url(url: str) -> Redis:
    """A client for `url` whose connections pack with hiredis."""
    return Redis.from_url(url, connection_class=HiredisPackedConnection)


def redis_cluster_from_url(url: str) -> RedisCluster:
    """A cluster client for `url` whose connections are the gateway's (hiredis packing, and uvloop's closed
    transport raised as redis-py's ConnectionError — what the ledger takes for an outage).

    RedisCluster's constructor sets redis-py's Connection in the settings every node is made from, the startup
    nodes already made; its nodes connect lazily, so setting the class there and on those nodes before the
    first command gives every connection of the client this class. Over TLS redis-py's SSL class stays."""
    client = RedisCluster.from_url(url)
    if client.connection_kwargs.get("connection_class") is Connection:
        client.connection_kwargs["connection_class"] = HiredisPackedConnection
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = HiredisPackedConnection
    return client
