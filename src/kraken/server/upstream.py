"""The I/O of a proxy's link to its upstream node: one TCP connection, in push mode.

``UpstreamLink`` connects (again and again, with backoff, until stopped), puts
the connection in push mode, then tells the broker (``UpstreamBroker.link_up``),
which holds its topics through it. Requests go out in order and their replies
come back in order, each to the callback given with it; pushes (``VALUE push``)
go to the broker as they come. Every ``KEEPALIVE`` seconds it asks ``get
messages horizon`` (a push's atomic answer, asked for), which keeps the
connection from the upstream node's idle timeout and the broker's horizon
recent, and it lets the broker drop the topics whose linger is over.

The link never blocks the loop: a write that the socket does not take stays in
the transport's buffer, and requests sent while the link is down are refused by
the broker before they get here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from kraken.brokers.upstream import UNREACHABLE, OnReply, UpstreamBroker, describe_reply
from kraken.errors import ClientError, ServerError
from kraken.server.hub import now_us
from kraken.wire import Push, Request, encode_request, parse_horizon, parse_publish_block
from kraken.wire.replies import ErrorLine, Reply, ReplyError, ReplyParser, Stored, Values

log = logging.getLogger("kraken.upstream")

BACKOFF_FIRST = 0.05  # seconds before the first reconnect; doubled up to BACKOFF_CAP
BACKOFF_CAP = 2.0
KEEPALIVE = 5.0  # seconds between two get messages horizon on an idle link
CONNECT_TIMEOUT = 5.0


class UpstreamLink(asyncio.Protocol):
    """See the module's docstring."""

    def __init__(self, broker: UpstreamBroker, host: str, port: int) -> None:
        self.broker = broker
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.transport: asyncio.Transport | None = None
        self.connected = False  # connected and in push mode
        self.state = "connecting"
        self.connects = 0
        self.since = time.time()  # when the state last changed
        self.last_error = ""
        self._parser = ReplyParser()
        self._waiting: deque[OnReply | None] = deque()
        self._lost: asyncio.Event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._was_up = False  # the connection of this round came up (push mode accepted)
        broker.attach(self)

    # -- the broker's side (Upstream) ---------------------------------------------

    def send(self, request: Request, on_reply: OnReply | None = None) -> None:
        assert self.transport is not None
        self._waiting.append(on_reply)
        self.transport.write(encode_request(request))

    def status(self) -> dict[str, object]:
        return {
            "address": self.address,
            "state": self.state,
            "state_seconds": round(time.time() - self.since, 3),
            "connects": self.connects,
            "last_error": self.last_error,
            "requests_waiting": len(self._waiting),
        }

    # -- running -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.transport is not None:
            self.transport.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = BACKOFF_FIRST
        while not self._stopping:
            self._lost.clear()  # before connecting: a close at once is not missed
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: self, self.host, self.port), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError) as error:
                self._set_state("connecting", str(error) or type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            while not self._lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost.wait(), KEEPALIVE)
                if self.connected:
                    self.broker.expire(now_us())
                    self.broker.sync()
            # back off from one connection to the next unless the last one came up
            # (push mode accepted): a node that takes connections and refuses them
            # (its max_tcp_clients) is not hammered
            delay = BACKOFF_FIRST if self._was_up else min(delay * 2, BACKOFF_CAP)
            self._was_up = False
            await asyncio.sleep(delay)

    # -- asyncio callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._parser = ReplyParser()
        self._waiting.clear()
        self.send(Push(), self._pushing)

    def _pushing(self, reply: Reply | ServerError) -> None:
        if isinstance(reply, ServerError):
            return  # the connection dropped first: connection_lost said so
        if not isinstance(reply, Stored):
            if isinstance(reply, ErrorLine) and reply.kind == b"SERVER_ERROR":
                why = reply.reason  # Too many clients, shutting down...
            else:
                why = f"{describe_reply(reply)}: is it a Kraken node?"
            log.error("upstream %s refused push mode: %s", self.address, why)
            if self.transport is not None:
                self.transport.close()
            return
        self._was_up = True
        self.connected = True
        self.connects += 1
        self._set_state("up", "")
        self.broker.link_up()

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ReplyError as error:
            self._broken(f"sent what is no reply: {error}")
            return
        for reply in replies:
            if isinstance(reply, Values) and b"push" in reply.values:
                values = reply.values
                try:
                    entries = parse_publish_block(values[b"push"]) if values[b"push"] else ()
                    horizon = parse_horizon(values[b"horizon"])
                except (ClientError, KeyError) as error:
                    # nothing of it is delivered; the resume asks again from the last good
                    # horizon, on a new connection
                    self._broken(f"sent a push that is no push ({error!r})")
                    return
                self.broker.pushed(entries, horizon)
            elif self._waiting:
                on_reply = self._waiting.popleft()
                if on_reply is not None:
                    on_reply(reply)
            elif isinstance(reply, ErrorLine) and reply.kind == b"SERVER_ERROR":
                # said before the upstream node closes the link (it is stopping): the
                # link reconnects, and resumes, once it is back
                log.info("upstream %s: %s", self.address, reply.line.decode(errors="replace"))
            else:
                log.warning("upstream %s: a reply to no request: %s", self.address, reply)

    def connection_lost(self, exc: Exception | None) -> None:
        was_up = self.connected
        self.connected = False
        self.transport = None
        waiting, self._waiting = self._waiting, deque()
        error = ServerError(UNREACHABLE)
        for on_reply in waiting:
            if on_reply is not None:
                on_reply(error)
        if not self._stopping:
            why = str(exc) if exc is not None else "closed by the other end"
            self._set_state("connecting", why)
            if was_up:
                log.warning("upstream link to %s lost (%s); reconnecting", self.address, why)
        self._lost.set()

    # -- helpers -----------------------------------------------------------------

    def _broken(self, why: str) -> None:
        log.error("upstream %s %s; reconnecting", self.address, why)
        if self.transport is not None:
            self.transport.abort()

    def _set_state(self, state: str, error: str) -> None:
        if state != self.state:
            self.state = state
            self.since = time.time()
            if state == "up":
                log.info("upstream link to %s up (connection %d)", self.address, self.connects)
        self.last_error = error
