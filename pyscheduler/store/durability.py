"""Durable writes: an enqueue acknowledged only once a replica (or the AOF) has it.

Redis replicates asynchronously: a primary answers a write before any replica has it, so a
primary that dies right after an enqueue's reply can take acknowledged jobs with it. A
durable enqueue sends `WAIT numreplicas timeout` (or `WAITAOF numlocal numreplicas timeout`,
Redis >= 7.2 and Valkey) right after its FCALL, in the same round trip and on the same
connection: WAIT blocks until the replicas acknowledged every write that connection made,
which includes the enqueue. Too few acknowledgements within the timeout, and the caller is
told (`NotDurable`): the jobs are stored on the primary, not yet known to be anywhere else.

Why a connection of its own, not the pipelines the other calls use: WAIT counts what *its*
connection wrote, so it must follow the FCALL on the very connection that ran it, and never
be re-sent by itself. redis-py's pipelines re-send commands after a connection error (a
re-sent enqueue of an id that exists writes nothing, and a WAIT after it confirms nothing
about the first write), and a cluster pipeline re-routes a keyless WAIT to every node. So the
round trip here takes one connection from the pool of the server that owns the queue (on a
Redis Cluster, the primary of the queue's slot), writes the commands and the WAIT in one
packet, reads every reply, and gives the connection back; a connection lost after the send
raises (whether the jobs exist is unknown, as for any enqueue cut short) and is never
retried here. A MOVED or ASK reply (the FCALL was refused, nothing written) is followed, and so
is a node that cannot be reached at all (nothing sent): the cluster client is asked to learn
the slot's owner (one keyed read through it, which follows MOVED and rebuilds its map after a
failover), and the round trip goes there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, MovedError

from ..exceptions import InvalidOption
from .connection import Client

__all__ = ["Durability", "durability_of", "send_durably"]

Command = Sequence[Any]

#: The longest a durable enqueue may wait for its acknowledgements.
TIMEOUT_MAX_S = 3600.0
#: More replicas than this is a mistake (a shard with 100 replicas is not a thing).
REPLICAS_MAX = 100
# How many MOVED/ASK replies a durable round trip follows before it gives up.
REDIRECTIONS_MAX = 5


@dataclass(frozen=True, slots=True)
class Durability:
    """What a durable enqueue waits for before it returns.

    `replicas`: how many replicas must have the write (WAIT). With `aof`, the write must also
    be fsynced to the primary's own append-only file, and the `replicas` must have fsynced it
    to theirs (WAITAOF 1 replicas timeout: Redis >= 7.2 or Valkey, `appendonly yes`); with
    `aof` and `replicas=0`, the primary's AOF alone. `timeout`: seconds to wait at most (keep
    it below the client's `socket_timeout`, if one is set).
    """

    replicas: int = 1
    aof: bool = False
    timeout: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int):
            raise InvalidOption(f"durable replicas must be an integer, not {self.replicas!r}")
        if not 0 <= self.replicas <= REPLICAS_MAX:
            raise InvalidOption(f"durable replicas must be in 0..{REPLICAS_MAX}")
        if not isinstance(self.aof, bool):
            raise InvalidOption(f"durable aof must be True or False, not {self.aof!r}")
        if self.replicas == 0 and not self.aof:
            raise InvalidOption("durable needs replicas >= 1, or aof=True (the primary's AOF)")
        timeout = self.timeout
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not 0 < timeout <= TIMEOUT_MAX_S
        ):
            raise InvalidOption(
                f"durable timeout must be a number of seconds in (0, {TIMEOUT_MAX_S:.0f}],"
                f" not {timeout!r}"
            )

    def command(self) -> tuple[Any, ...]:
        # WAIT's timeout 0 would block forever: the floor is 1 ms.
        ms = max(1, round(self.timeout * 1000))
        if self.aof:
            return ("WAITAOF", 1, self.replicas, ms)
        return ("WAIT", self.replicas, ms)

    def shortfall(self, reply: Any) -> str | None:
        """What is missing in the WAIT/WAITAOF reply, in words; None when it is all there."""
        name = "WAITAOF" if self.aof else "WAIT"
        if isinstance(reply, redis.ResponseError):
            return f"the server could not confirm it ({name}: {reply})"
        try:
            if self.aof:
                local, replicas = (int(x) for x in reply)
            else:
                local, replicas = 1, int(reply)
        except (TypeError, ValueError):
            return f"the server's {name} reply {reply!r} is not understood"
        missing = []
        if local < 1:
            missing.append("the primary has not fsynced it to its AOF")
        if replicas < self.replicas:
            what = "fsynced it to its AOF" if self.aof else "acknowledged it"
            wanted = f"{self.replicas} replica" + ("s" if self.replicas > 1 else "")
            missing.append(f"only {replicas} of the {wanted} wanted {what}")
        if not missing:
            return None
        return " and ".join(missing) + f" within {self.timeout:g} s"


def durability_of(value: object) -> Durability | None:
    """The durability a `durable=` option asks for: None for False/None, the defaults for
    True, a `Durability` as given; anything else is refused (InvalidOption)."""
    if value is None or value is False:
        return None
    if value is True:
        return Durability()
    if isinstance(value, Durability):
        return value
    raise InvalidOption(f"durable must be True, False or a Durability(...), not {value!r}")


def send_durably(
    conn: Client, key: str, commands: Sequence[Command], wanted: Durability
) -> tuple[list[Any], str | None]:
    """Send `commands` (writes of the queue that owns `key`) then `wanted`'s WAIT on one
    connection, in one round trip. Returns their replies (an error reply as its
    `redis.ResponseError`) and what the acknowledgement lacks (None: durable)."""
    asking: tuple[str, int] | None = None
    for _ in range(REDIRECTIONS_MAX + 1):
        client = _client_for(conn, key, asking)
        sent: list[Command] = []
        for command in commands:
            if asking is not None:
                sent.append(("ASKING",))
            sent.append(command)
        sent.append(wanted.command())
        try:
            replies = _round_trip(client, sent)
        except _NotSent as exc:
            if not isinstance(conn, RedisCluster):
                raise exc.error from None
            # The node is gone (a killed primary the map still names): the cluster client
            # finds the slot's owner again the way it does for any command, or raises.
            asking = None
            conn.exists(key)
            continue
        if asking is not None:
            replies = replies[1::2] + replies[-1:]
        redirected = next((r for r in replies[:-1] if isinstance(r, AskError)), None)
        if redirected is None or not isinstance(conn, RedisCluster):
            return replies[:-1], wanted.shortfall(replies[-1])
        if isinstance(redirected, MovedError):
            # The slot has a new owner (a failover, a resharding): let the cluster client
            # learn it the way it does for any command (it follows MOVED and updates its map).
            asking = None
            conn.exists(key)
        else:
            asking = (redirected.host, int(redirected.port))
    raise redis.exceptions.ClusterError(f"a durable enqueue was redirected over and over ({key})")


def _client_for(conn: Client, key: str, asking: tuple[str, int] | None) -> redis.Redis:
    """The one-server client of the server that owns `key`: `conn` itself, or on a cluster
    the client of its slot's primary (of the node an ASK reply named)."""
    if not isinstance(conn, RedisCluster):
        return conn
    node: ClusterNode | None
    if asking is not None:
        node = conn.get_node(host=asking[0], port=asking[1])  # type: ignore[no-untyped-call]
        if node is None:
            raise redis.exceptions.ClusterError(
                f"an ASK reply named {asking[0]}:{asking[1]}, a node the cluster client does"
                " not know"
            )
    else:
        node = conn.get_node_from_key(key)  # type: ignore[no-untyped-call]
    client: redis.Redis = conn.get_redis_connection(node)
    return client


class _NotSent(Exception):
    """No connection could be made: nothing was sent, so trying elsewhere is safe."""

    def __init__(self, error: redis.RedisError) -> None:
        super().__init__(str(error))
        self.error = error


def _round_trip(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """Write `commands` on one connection of `client`'s pool in one packet and read every
    reply; a connection error after the write is raised, never re-sent."""
    pool = client.connection_pool
    try:
        connection = pool.get_connection()  # connected, or nothing was sent
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise _NotSent(exc) from exc
    try:
        connection.send_packed_command(connection.pack_commands(commands))  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        for command in commands:
            try:
                replies.append(client.parse_response(connection, str(command[0])))  # type: ignore[no-untyped-call]
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        # Replies may be left unread on it: the next user must not get them.
        connection.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(connection)
