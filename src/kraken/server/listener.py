"""The server: the listening socket, the set of connections and the idle sweep.

``KrakenServer`` is the ``Hub`` its connections share, plus what only the
server does: accept, sweep and stop. One periodic sweep (not a timer per
connection) closes idle clients and those stalled in the middle of a request,
and aborts those that do not drain after being closed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import kraken
from kraken.brokers import Broker
from kraken.config import Config
from kraken.server.hub import Hub
from kraken.server.tcp import Connection
from kraken.sessions import Authorizer, CloseReason

log = logging.getLogger("kraken.server")

CLOSE_GRACE = 10.0  # seconds a closed connection may take to flush before it is aborted


class KrakenServer(Hub):
    def __init__(
        self, config: Config, broker: Broker | None = None, authorizer: Authorizer | None = None
    ) -> None:
        super().__init__(config, broker, authorizer)
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._reads_then = (0.0, 0)  # loop time and reads at the last sweep
        timeout = min(config.client_idle_timeout, config.request_timeout)
        self._sweep_every = max(0.05, min(1.0, timeout / 4))

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tick = loop.time()
        self._reads_then = (self.tick, 0)
        self.refresh()
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
        self.refresh()
        # last_seen is the tick before the read, up to one sweep interval early
        idle_before = now - self.config.client_idle_timeout - self._sweep_every
        request_before = now - self.config.request_timeout - self._sweep_every
        for connection in list(self.connections):
            if connection.reason is None:
                if connection.last_seen < idle_before:
                    connection.close(CloseReason.IDLE_TIMEOUT)
                elif connection.last_seen < request_before:
                    connection.time_out_request(request_before)
            elif connection.closed_at < now - CLOSE_GRACE:
                connection.abort()
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
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
        log.info("kraken stopped")
