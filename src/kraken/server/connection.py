"""One TCP client: asyncio Protocol callbacks gluing the parser to the router.

Rule 1: no task per connection or per message; everything happens in the
transport's callbacks, and a batch of pipelined requests gets one write.
Rule 2: every close has exactly one reason (``CloseReason``), logged once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import TYPE_CHECKING

from kraken.errors import ClientError
from kraken.routing import ClientQueue, Delivery, Message
from kraken.wire import (
    Get,
    Publish,
    Quit,
    Register,
    Rejected,
    Request,
    RequestParser,
    RetroSubscribe,
    Subscribe,
    Unsubscribe,
    Version,
    encode_entry,
    encode_value,
    format_horizon,
)
from kraken.wire.encode import END, NOT_FOUND, STORED
from kraken.wire.parser import BAD_HORIZON

if TYPE_CHECKING:
    from kraken.server.listener import KrakenServer

log = logging.getLogger("kraken.server")

MAX_HORIZON_AHEAD = 60_000_000  # microseconds a retro_subscribe horizon may lie in the future
TOO_MANY_CLIENTS = b"SERVER_ERROR Too many clients\r\n"
SLOW_CONSUMER = b"SERVER_ERROR slow consumer\r\n"
INTERNAL_ERROR = b"SERVER_ERROR internal error\r\n"
POLL = b"get messages\r\n"
END_OF_POLL = b"\r\nEND\r\n"


def _now_us() -> int:
    return time.time_ns() // 1000


class CloseReason(enum.Enum):
    CLIENT_CLOSED = "client closed the connection"
    CLIENT_QUIT = "client sent quit"
    FRAMING_ERROR = "framing error"
    SLOW_CONSUMER = "slow consumer"
    IDLE_TIMEOUT = "idle timeout"
    TOO_MANY_CLIENTS = "too many clients"
    INTERNAL_ERROR = "internal error"
    SHUTDOWN = "server shutdown"


def encode_deliveries(entries: list[Delivery], tail: bytes = b"\r\n") -> bytes:
    """The ``VALUE messages`` of a poll answer, encoding each message at most once.

    ``tail`` ends the data block; passing ``b"\r\nEND\r\n"`` makes it the whole answer.
    """
    block = b"\r\n".join(
        [
            (d.encoded or _encode_message(d)) if d.__class__ is Message else _encode_partial(d)  # type: ignore[arg-type]
            for d in entries
        ]
    )
    return b"".join((b"VALUE messages 0 %d\r\n" % len(block), block, tail))


def _encode_message(message: Message) -> bytes:
    """A delivery of every topic of ``message``: encoded on first use, then cached."""
    encoded = message.encoded = encode_entry(message.topics, message.payload)
    return encoded


def _encode_partial(delivery: tuple[Message, tuple[bytes, ...]]) -> bytes:
    message, topics = delivery
    return encode_entry(topics, message.payload)


class Connection(asyncio.Protocol):
    __slots__ = (
        "_batch",
        "_close_line",
        "closed_at",
        "connected_at",
        "last_poll",
        "last_seen",
        "parser",
        "peer",
        "polls",
        "queue",
        "reason",
        "server",
        "transport",
    )

    def __init__(self, server: KrakenServer) -> None:
        self.server = server
        config = server.config
        self.parser = RequestParser(config.max_line_bytes, config.max_request_bytes)
        self.transport: asyncio.Transport | None = None
        self.queue: ClientQueue | None = None
        self.peer = "?"
        self.reason: CloseReason | None = None
        self.last_seen = server.tick
        self.connected_at = time.time()
        self.last_poll = 0.0  # time.time() of the last poll for messages, 0 if none yet
        self.closed_at = 0.0
        self._batch = False  # inside data_received: a close waits for the batch's replies
        self._close_line = b""
        self.polls = 0  # lone polls waiting for answer_polls

    # -- asyncio callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        server = self.server
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        if len(server.connections) >= server.config.max_tcp_clients:
            self.close(CloseReason.TOO_MANY_CLIENTS, TOO_MANY_CLIENTS)
            return
        self.queue = server.new_queue(self._slow_consumer)
        server.connections.add(self)
        log.info("client %d connected from %s", self.queue.id, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self.reason is None:
            self.reason = CloseReason.CLIENT_CLOSED
        if self.queue is not None:
            server.router.remove(self.queue)
            server.connections.discard(self)
            log.info(
                "client %d from %s disconnected: %s", self.queue.id, self.peer, self.reason.value
            )
        server.closed(self.reason)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests too.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.reason is None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.reason is not None:
            return
        server = self.server
        self.last_seen = server.tick
        server.bytes_received += len(data)
        server.reads += 1
        if data == POLL and self.parser.idle and not log.isEnabledFor(logging.DEBUG):
            # The most common request, alone in a read: answered without the parser;
            # under load after every other read of this turn of the loop.
            self.polls += 1
            if not server.batch_polls:
                self.answer_polls()
            elif self.polls == 1:
                server.defer_poll(self)
            return
        if self.polls:
            self.answer_polls()  # replies go out in the order of their requests
            if self.reason is not None:  # the answer failed: an internal error closed it
                return  # type: ignore[unreachable]
        requests = self.parser.feed(data)
        if not requests:
            return
        if log.isEnabledFor(logging.DEBUG):  # per-request logging, at debug only
            for request in requests:
                log.debug("client %s: %r", self.queue and self.queue.id, request)
        out: list[bytes] = []
        self._batch = True
        try:
            self._handle(requests, out)
        except Exception:
            log.exception("client %s: internal error", self.queue and self.queue.id)
            out.append(INTERNAL_ERROR)
            self.reason = CloseReason.INTERNAL_ERROR
        finally:
            self._batch = False
        assert self.transport is not None
        if self._close_line:
            out.append(self._close_line)
        if out:
            reply = b"".join(out)
            server.bytes_sent += len(reply)
            self.transport.write(reply)
        if self.reason is not None:
            self._finish_close()

    # -- requests --------------------------------------------------------------

    def answer_polls(self) -> None:
        """Answer the lone polls received (see ``batch_polls_above``).

        Deferred to the end of the loop's turn, the answer also carries what the
        turn's publishes queued, and the turn's answers are written together.
        """
        polls = self.polls
        self.polls = 0
        if not polls or self.reason is not None:
            return
        self.last_poll = time.time()
        try:
            entries = self.queue.drain()  # type: ignore[union-attr]
            reply = encode_deliveries(entries, END_OF_POLL) if entries else END
        except Exception:
            log.exception("client %s: internal error", self.queue and self.queue.id)
            self.close(CloseReason.INTERNAL_ERROR, INTERNAL_ERROR)
            return
        if polls > 1:  # back-to-back polls: the first takes everything
            reply += END * (polls - 1)
        self.server.bytes_sent += len(reply)
        self.transport.write(reply)  # type: ignore[union-attr]

    def _handle(self, requests: list[Request], out: list[bytes]) -> None:
        server = self.server
        router = server.router
        queue = self.queue
        assert queue is not None
        now = time.time_ns() // 1000
        for request in requests:
            kind = request.__class__
            if kind is Get:
                out.append(self._get(request.keys, now))  # type: ignore[union-attr]
            elif kind is Publish:
                router.publish_many(queue.id, request.entries, _now_us)  # type: ignore[union-attr]
                if not request.noreply:  # type: ignore[union-attr]
                    out.append(STORED)
            elif kind is Subscribe:
                stored = router.subscribe(queue, request.topics, now)  # type: ignore[union-attr]
                if self.reason is not None:  # its own retroactive messages overflowed it
                    return
                if not request.noreply:  # type: ignore[union-attr]
                    out.append(STORED if stored else NOT_FOUND)
            elif kind is Unsubscribe:
                router.unsubscribe(queue, request.topics)  # type: ignore[union-attr]
                if not request.noreply:  # type: ignore[union-attr]
                    out.append(STORED)
            elif kind is RetroSubscribe:
                assert isinstance(request, RetroSubscribe)
                reply = self._retro_subscribe(request, now)
                if self.reason is not None:
                    return
                if not request.noreply:
                    out.append(reply)
            elif kind is Register:
                router.register(queue, now)
                if not request.noreply:  # type: ignore[union-attr]
                    out.append(STORED)
            elif kind is Rejected:
                assert isinstance(request, Rejected)
                error = request.error
                if error.closes:
                    server.count_error(error)
                    self._close_line = error.reply
                    self.reason = CloseReason.FRAMING_ERROR
                    log.info("client %d: %s", queue.id, error.reply.decode().strip())
                    return
                server.count_error(error)
                if not request.noreply:
                    out.append(error.reply)
            elif kind is Version:
                out.append(server.version_reply)
            elif kind is Quit:
                self.reason = CloseReason.CLIENT_QUIT
                return

    def _get(self, keys: tuple[bytes, ...], now: int) -> bytes:
        queue = self.queue
        assert queue is not None
        if b"messages" in keys:
            self.last_poll = now / 1e6
        if keys == (b"messages",):
            entries = queue.drain()
            return encode_deliveries(entries, END_OF_POLL) if entries else END
        parts = []
        for key in keys:
            if key == b"messages":
                entries = queue.drain()
                if entries:
                    parts.append(encode_deliveries(entries))
            elif key == b"horizon":
                horizon = format_horizon(self.server.router.horizon(now))
                parts.append(encode_value(b"horizon", horizon))
        parts.append(END)
        return b"".join(parts)

    def _retro_subscribe(self, request: RetroSubscribe, now: int) -> bytes:
        if request.horizon > now + MAX_HORIZON_AHEAD:
            error = ClientError(BAD_HORIZON)
            self.server.count_error(error)
            return error.reply
        assert self.queue is not None
        stored = self.server.router.retro_subscribe(
            self.queue, request.horizon, request.topics, now
        )
        return STORED if stored else NOT_FOUND

    # -- closing ---------------------------------------------------------------

    def _slow_consumer(self) -> None:
        assert self.queue is not None
        log.warning(
            "client %d from %s is a slow consumer (queue past max_queued_messages %d or "
            "max_queued_bytes %d): closing it",
            self.queue.id,
            self.peer,
            self.server.config.max_queued_messages,
            self.server.config.max_queued_bytes,
        )
        self.close(CloseReason.SLOW_CONSUMER, SLOW_CONSUMER)

    def close(self, reason: CloseReason, line: bytes = b"") -> None:
        """Close with one reason; ``line`` is written first (after a batch's replies)."""
        if self.reason is not None:
            return
        self.reason = reason
        self._close_line = line
        if not self._batch:
            if line and self.transport is not None:
                self.transport.write(line)
            self._finish_close()

    def _finish_close(self) -> None:
        self.closed_at = self.server.tick
        if self.transport is not None:
            self.transport.close()
