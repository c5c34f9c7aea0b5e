"""The server: the listening socket, the set of connections and the idle sweep.

``KrakenServer`` is the ``Hub`` its connections share, plus what only the
server does: accept, sweep, drain and stop. One periodic sweep (not a timer per
connection) closes idle clients, those stalled in the middle of a request and
those whose unsent replies pass their limit (``Connection.limit_unsent``), and
aborts those that do not drain after being closed.

Connections stamp what they see with ``tick``, the loop time of the last sweep:
a coarse clock that costs nothing per read. A stamp ``t`` says the event came at
or after ``t`` and before the next sweep's tick, however late that sweep ran (a
long request can hold the loop). So the sweep keeps the recent ticks, and times
a connection out only when the tick after its stamp is ``timeout`` old: never
early, at most two sweep intervals late.

A graceful stop drains first, as NATS's lame-duck mode does (``drain``): the
listening socket closes at once, so new connections are refused (a restarted
server or a load balancer's next backend takes them); the connections open keep
being served, publishes included, and each in turn, in random order, spread over
the first half of the drain period, closes with ``SERVER_ERROR shutting down``
as soon as nothing waits for it: a poller collects what is queued first
(``Connection.drain``). The clients thus reconnect one by one, not in a herd.
The drain ends when every connection is closed or its period is over; ``stop``
then closes what is left, with the same line. ``Shutdown`` holds the requests:
the first sets the period, a later one may only shorten it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from array import array
from bisect import bisect_right

import kraken
from kraken.brokers import Broker
from kraken.config import Config
from kraken.server.hub import Hub
from kraken.server.tcp import Connection
from kraken.sessions import Authorizer, CloseReason

log = logging.getLogger("kraken.server")

CLOSE_GRACE = 10.0  # seconds a closed connection may take to flush before it is aborted
CLOCK_SLACK = 0.001  # seconds: uvloop's clock counts whole milliseconds
# The turns of a drain fall in its first half: the second lets a poller whose turn
# found messages queued poll once more (clients poll every second or so).
DRAIN_SPREAD = 0.5
# Turns come at least this often (connections a second): a few connections need no
# spreading, and 10,000 over the default 5 s drain come at 4,000 a second.
MIN_DRAIN_RATE = 100.0
DRAIN_STEP = 0.01  # seconds between two rounds of turns
DRAIN_LOOK = 0.05  # seconds between two looks for connections left, once all had their turn


class Shutdown:
    """The requests to stop a server, and how long it may drain (``KrakenServer.drain``).

    The first request sets the drain period; a later one may shorten what is left
    of it, never lengthen it. ``terminate`` is SIGTERM's: the first drains for
    ``default_drain`` seconds, the second stops at once.
    """

    def __init__(self, default_drain: float) -> None:
        self.default_drain = default_drain
        self.requested = asyncio.Event()
        self.deadline = math.inf  # loop time the drain ends: inf until requested
        self.forced = False  # a second SIGTERM: the stop waits for no client either
        self._changed = asyncio.Event()

    def request(self, drain: float | None = None) -> float:
        """Stop, draining at most ``drain`` seconds (None: ``default_drain``); the
        seconds left of the drain."""
        now = asyncio.get_running_loop().time()
        seconds = self.default_drain if drain is None else drain
        if not seconds >= 0:  # NaN too
            seconds = 0.0
        if now + seconds < self.deadline:
            self.deadline = now + seconds
            self._changed.set()
        self.requested.set()
        return self.deadline - now

    def terminate(self) -> None:
        """SIGTERM: drain for ``default_drain`` seconds; during a drain, stop at once,
        without waiting for clients to take what is left of their answers (``forced``)."""
        if self.requested.is_set():
            log.info("second request to stop: stopping at once")
            self.forced = True
            self.request(0.0)
        else:
            self.request()

    def left(self) -> float:
        """Seconds left of the drain (0 once over; inf before any request)."""
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    async def wait(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds, or less if a request shortens the drain."""
        if not self._changed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()


class KrakenServer(Hub):
    def __init__(
        self, config: Config, broker: Broker | None = None, authorizer: Authorizer | None = None
    ) -> None:
        super().__init__(config, broker, authorizer)
        self._server: asyncio.base_events.Server | None = None
        self._port: int | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._reads_then = (0.0, 0)  # loop time and reads at the last sweep
        timeout = min(config.client_idle_timeout, config.request_timeout)
        self._sweep_every = max(0.05, min(1.0, timeout / 4))
        # the ticks of the sweeps, oldest first, back to the last one more than the
        # longer timeout ago (one a second for an hour's idle timeout: 28 KiB)
        self._ticks = array("d")

    @property
    def port(self) -> int:
        """The port it listens on, or listened on before a drain or stop closed it."""
        assert self._port is not None
        return self._port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tick = loop.time()
        self._ticks.append(self.tick)
        self._reads_then = (self.tick, 0)
        self.refresh()
        self._server = await loop.create_server(
            lambda: Connection(self),
            self.config.listen_ip,
            self.config.tcp_server_port,
            reuse_address=True,
            backlog=4096,
        )
        self._port = self._server.sockets[0].getsockname()[1]
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
        config = self.config
        ticks = self._ticks
        if not ticks or now > ticks[-1]:
            ticks.append(now)
            # keep back to the last tick at least the longer timeout ago
            longest = max(config.client_idle_timeout, config.request_timeout)
            old = bisect_right(ticks, now - longest - CLOCK_SLACK) - 1
            if old > 0:
                del ticks[:old]
        idle_before = self._tick_at_or_before(now - config.client_idle_timeout)
        request_before = self._tick_at_or_before(now - config.request_timeout)
        for connection in list(self.connections):
            if connection.reason is None:
                last_seen = connection.last_seen
                if last_seen < idle_before:
                    connection.time_out_idle(idle_before)
                if last_seen < request_before and connection.reason is None:
                    connection.time_out_request(request_before)
                connection.limit_unsent()
            elif connection.closed_at < now - CLOSE_GRACE:
                connection.abort()
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    def _tick_at_or_before(self, when: float) -> float:
        """The last tick at or before ``when`` (``-inf`` if none): a stamp below it is
        of an event that came before ``when``.

        An event stamped ``t`` came before the tick after ``t``, which is at or before
        ``when`` exactly when ``t`` is below the last tick at or before ``when``.
        """
        ticks = self._ticks
        i = bisect_right(ticks, when - CLOCK_SLACK) - 1
        return ticks[i] if i >= 0 else float("-inf")

    async def drain(self, shutdown: Shutdown) -> None:
        """Stop accepting, and give each open connection its turn to close (see the
        module's docstring), until every one is closed or ``shutdown``'s drain is over.
        Meanwhile the connections are served as usual; ``stop`` closes what is left."""
        loop = asyncio.get_running_loop()
        self.draining = True
        if self._server is not None:
            self._server.close()  # new connections are refused from now on
        order = [c for c in self.connections if c.reason is None]
        random.shuffle(order)
        left = shutdown.left()
        if not order or not left:
            return
        log.info(
            "draining: no longer accepting; %d client(s) get SERVER_ERROR shutting down "
            "within %.3g s",
            len(order),
            left,
        )
        began = loop.time()
        spread = min(left * DRAIN_SPREAD, len(order) / MIN_DRAIN_RATE)
        turns = 0
        while shutdown.left() > 0:
            elapsed = loop.time() - began
            due = len(order) if elapsed >= spread else int(elapsed / spread * len(order)) + 1
            for connection in order[turns:due]:
                connection.drain()
            turns = max(turns, due)
            if turns < len(order):
                await shutdown.wait(DRAIN_STEP)
                continue
            if not self.connections:  # closed, and their last bytes taken by the sockets
                log.info("drained: every client closed in %.1f s", loop.time() - began)
                return
            for connection in list(self.connections):
                connection.drain()  # look again: its answers may have been taken since
            await shutdown.wait(DRAIN_LOOK)
        still = sum(1 for c in self.connections if c.reason is None)
        flushing = len(self.connections) - still
        if self.connections:
            log.info(
                "drain over after %.1f s: closing the %d client(s) left%s",
                loop.time() - began,
                still,
                f" ({flushing} closed but not done taking their answers)" if flushing else "",
            )

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection (with ``SERVER_ERROR shutting down``),
        wait for them up to ``timeout``."""
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
