"""The server: the listening socket, the set of connections and the idle sweep.

This is the only layer that awaits. It owns the router and hands each new
connection a queue; one periodic sweep (not a timer per connection) closes idle
clients and aborts those that do not drain after being closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

import kraken
from kraken.config import Config
from kraken.errors import ProtocolError
from kraken.routing import ClientQueue, Router
from kraken.server.connection import CloseReason, Connection

log = logging.getLogger("kraken.server")

CLOSE_GRACE = 10.0  # seconds a closed connection may take to flush before it is aborted


class KrakenServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.router = Router(
            time.time_ns() // 1000,
            num_shards=config.num_router_shards,
            messages_per_shard=config.messages_stored_per_router_shard,
            min_fanout_to_warn=config.router_min_fanout_to_warn,
            min_topics_to_warn=config.router_min_publish_to_topics_to_warn,
        )
        self.connections: set[Connection] = set()
        self.version_reply = f"VERSION {kraken.__version__}\r\n".encode()
        self.tick = 0.0  # loop time of the last sweep: a coarse clock for idleness
        self.started = time.time()
        self.closes: Counter[CloseReason] = Counter()
        self.errors: Counter[str] = Counter()  # protocol errors by reply line
        self.bytes_received = 0
        self.bytes_sent = 0  # replies; error lines written on close are not counted
        self._next_id = 0
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._deferred: list[Connection] = []  # connections with lone polls to answer
        self.reads = 0  # data_received calls, for the read rate
        self._reads_then = (0.0, 0)  # loop time and reads at the last sweep
        # answer lone polls at the end of the loop's turn (updated by each sweep)
        self.batch_polls = config.batch_polls_above == 0
        self._sweep_every = max(0.05, min(1.0, config.client_idle_timeout / 4))

    def defer_poll(self, connection: Connection) -> None:
        """Have ``connection`` answer its polls once this turn's reads are handled."""
        deferred = self._deferred
        deferred.append(connection)
        if len(deferred) == 1:
            asyncio.get_running_loop().call_soon(self._answer_polls)

    def _answer_polls(self) -> None:
        deferred = self._deferred
        self._deferred = []
        for connection in deferred:
            connection.answer_polls()  # a failure closes that connection alone

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections_accepted(self) -> int:
        return self._next_id

    def new_queue(self, on_overflow: Callable[[], None]) -> ClientQueue:
        self._next_id += 1
        config = self.config
        return ClientQueue(
            self._next_id, config.max_queued_messages, config.max_queued_bytes, on_overflow
        )

    def count_error(self, error: ProtocolError) -> None:
        self.errors[error.reply.split(b"\r")[0].decode("ascii", "replace")[:60]] += 1

    def closed(self, reason: CloseReason) -> None:
        self.closes[reason] += 1

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tick = loop.time()
        self._reads_then = (self.tick, 0)
        self._server = await loop.create_server(
            lambda: Connection(self),
            self.config.listen_ip,
            self.config.tcp_server_port,
            reuse_address=True,
            backlog=4096,
        )
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)
        log.info(
            "kraken %s listening on %s:%d", kraken.__version__, self.config.listen_ip, self.port
        )

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = self.tick = loop.time()
        then, reads = self._reads_then
        if now > then:
            rate = (self.reads - reads) / (now - then)
            self.batch_polls = (
                rate > self.config.batch_polls_above or not self.config.batch_polls_above
            )
        self._reads_then = (now, self.reads)
        idle_before = now - self.config.client_idle_timeout
        for connection in list(self.connections):
            if connection.reason is None:
                if connection.last_seen < idle_before:
                    connection.close(CloseReason.IDLE_TIMEOUT)
            elif connection.closed_at < now - CLOSE_GRACE and connection.transport is not None:
                connection.transport.abort()
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, wait for them up to ``timeout``."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close(CloseReason.SHUTDOWN)
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        log.info("kraken stopped")
