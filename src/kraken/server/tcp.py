"""The TCP transport: a thin asyncio pump between a socket and a ``Session``.

Read bytes, parse them into requests (``kraken.wire``), feed the session, write
what it returns: one write per read, however many requests it held. Everything
happens in the transport's callbacks, with no task per connection or message.

The one shortcut: a read that is exactly ``get messages``, the most common
request, skips the parser (not the session), and under load is answered at the
end of the loop's turn (``Hub.defer_poll``). It runs at every log level.

A read is carried out a batch of ``BATCH`` requests per turn of the loop: the rest
waits in the parser, reading paused, for the next turn (``parse_more``), after
every other connection's reads of this one. A client pipelining millions of tiny
requests thus takes its share of the loop, not all of it (libuv reads a ready
socket up to 32 times in a row: 8 MiB, 4 million empty lines).

A request begun but not finished (a data block shorter than its declared length)
is made visible: at debug level each read that leaves one logs what it waits for,
and the listener's sweep closes a connection that has sent nothing for
``request_timeout`` in the middle of one (``time_out_request``).

Replies written but not yet taken by the socket (the transport's write buffer)
count, with the payload bytes queued for the client, against
``max_queued_bytes``: past it the client is a slow consumer (``limit_unsent``).
It is checked where it costs nothing per message: after a write while the buffer
is above its high-water mark (``pause_writing`` was called), and by the sweep;
meanwhile the queue's own byte limit is lowered by the bytes unsent, so that what
is queued for the client is checked against what is left, as it is queued. The
high-water mark is at most a quarter of the limit: a buffer below it is not
counted.

Once closed, a connection lets go of everything (``connection_lost``): a block
half received (up to ``max_request_bytes``) is freed at once by reference
counting, not left in a cycle for the garbage collector, which this server runs
seldom.

A connection's connect and ordinary disconnect are logged at debug level only; a
close for a fault of the client or the server (``ABNORMAL``) at info.

A graceful stop drains (``KrakenServer.drain``): when its turn comes, a connection
closes with ``SERVER_ERROR shutting down`` once nothing waits for it (its queue
empty, no reply held, no request half-read), so that a poller first collects what
was queued for it, and takes all of its answers; ``draining`` marks it, checked
after each write (and by the drain, again and again, while it waits). Every close
for the shutdown writes that line, the end of a drain's included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from time import time_ns

from kraken.errors import FramingError, ServerError
from kraken.server.hub import Hub
from kraken.sessions import CloseReason, Session
from kraken.sessions.session import INTERNAL_ERROR, SLOW_CONSUMER
from kraken.wire import Request, RequestParser, describe

log = logging.getLogger("kraken.server")

TOO_MANY_CLIENTS = ServerError("Too many clients", closes=True)
SHUTTING_DOWN = ServerError("shutting down", closes=True)
POLL = b"get messages\r\n"
POLL_SIZE = len(POLL)
WRITE_HIGH_WATER = 64 * 1024  # bytes: the write buffer above which reading pauses (asyncio's)
# requests carried out per connection per turn of the loop, at most, a get counting its
# keys and a publish its messages (see parse_more)
BATCH = 1024
# closes that say something went wrong, logged at info (the others at debug)
ABNORMAL = frozenset(
    {
        CloseReason.SLOW_CONSUMER,
        CloseReason.FRAMING_ERROR,
        CloseReason.REQUEST_TIMEOUT,
        CloseReason.INTERNAL_ERROR,
    }
)


class Connection(asyncio.Protocol):
    # as an ``Identity``: a TCP client has no token; ``peer`` is a slot
    via = "tcp"
    claims = None

    __slots__ = (
        "_parse_scheduled",
        "_push_scheduled",
        "_reason",
        "_write_paused",
        "closed_at",
        "connected_at",
        "draining",
        "hub",
        "last_seen",
        "lone_polls",
        "parser",
        "peer",
        "polls",
        "reading_changed",
        "session",
        "transport",
    )

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        config = hub.config
        self.parser = RequestParser(
            config.max_line_bytes, config.max_request_bytes, BATCH, config.max_topics_per_message
        )
        self.transport: asyncio.Transport | None = None
        self.session: Session[bytes] | None = None
        self.peer = "?"
        self.last_seen = hub.tick
        self.connected_at = time.time()
        self.closed_at = 0.0
        self.polls = 0  # lone polls waiting for answer_polls
        self.reading_changed = 0.0  # hub.tick when reading last paused or resumed
        # why it closed, once it has no session: refused before one, or gone since
        self._reason: CloseReason | None = None
        self._write_paused = False
        self._parse_scheduled = False  # parse_more is due in the loop's next turn
        self._push_scheduled = False  # push mode: a push is due at the end of this turn
        self.draining = False  # its turn in the drain came: close once nothing waits
        # the session is open and holds no reply: a lone poll may take the shortcut,
        # and reading goes on (False while a reply is held: reading is paused)
        self.lone_polls = False

    @property
    def reason(self) -> CloseReason | None:
        """Why the connection closes, once it does."""
        session = self.session
        return session.close_reason if session is not None else self._reason

    # -- asyncio callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        hub = self.hub
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        if len(hub.connections) >= hub.config.max_tcp_clients:
            self._reason = CloseReason.TOO_MANY_CLIENTS
            transport.write(TOO_MANY_CLIENTS.reply)  # type: ignore[attr-defined]
            self._finish_close()
            return
        # the connection is its session's identity and its wake-up call (__call__):
        # no object more per client
        self.session = Session(hub.sessions, self, on_wake=self)
        self.lone_polls = True
        hub.accepted += 1
        hub.connections.add(self)
        high = min(WRITE_HIGH_WATER, hub.config.max_queued_bytes // 4)
        transport.set_write_buffer_limits(high, high // 4)  # type: ignore[attr-defined]
        if hub.debug:
            log.debug("client %d connected from %s", self.session.id, self.peer)
        if hub.draining:  # accepted just before the listener closed: its turn is now
            self.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lone_polls = False
        hub = self.hub
        session = self.session
        reason = CloseReason.CLIENT_CLOSED if exc is None else CloseReason.CONNECTION_RESET
        if session is not None:
            reason = session.disconnected(reason)
            hub.connections.discard(self)
            level = logging.INFO if reason in ABNORMAL else logging.DEBUG
            if level == logging.INFO or hub.debug:
                why = reason.value
                if exc is not None and reason is CloseReason.CONNECTION_RESET:
                    why = f"{why} ({exc})"
                log.log(level, "client %d from %s disconnected: %s", session.id, self.peer, why)
        else:
            reason = self._reason or reason
        if not self.closed_at:  # the client closed: counted now (a close of ours was counted)
            hub.closed(reason)
        # Let go of everything at once: a half-received data block (up to
        # max_request_bytes) goes now, and the connection, its transport and its
        # session form no cycle left for the garbage collector, which may take long.
        self._reason = reason
        self.session = None
        self.transport = None
        self.parser.discard()

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests too. (Called
        # inside one of this connection's writes, which then checks limit_unsent.)
        self._write_paused = True
        self.reading_changed = self.hub.tick
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.session is not None:  # the buffer is about empty: the queue has it all
            self.session.queue.max_bytes = self.hub.config.max_queued_bytes
        if self.transport is not None and self.lone_polls:
            self.reading_changed = self.hub.tick
            self._resume_reading()
        self._schedule_push()  # what was queued while the client read nothing

    def data_received(self, data: bytes) -> None:
        hub = self.hub
        if data == POLL and self.lone_polls and self.parser.idle:
            # The most common request, alone in a read: no parser; under load,
            # answered after every other read of this turn of the loop.
            self.last_seen = hub.tick
            hub.bytes_received += POLL_SIZE
            hub.reads += 1
            if hub.debug:
                log.debug("client %d: get messages", self.session.id)  # type: ignore[union-attr]
            self.polls += 1
            if not hub.batch_polls:
                self.answer_polls(time_ns() // 1000)
            elif self.polls == 1:
                hub.defer_poll(self)
            return
        session = self.session
        if session is None or session.close_reason is not None:
            return
        self.last_seen = hub.tick
        hub.bytes_received += len(data)
        hub.reads += 1
        if self.polls:
            self.answer_polls(time_ns() // 1000)  # replies go out in request order
            if self.reason is not None:  # the answer closed it (an internal error)
                return
        self._carry_out(session, self.parser.feed(data))
        if self.parser.more and self.transport is not None:  # the rest in the next turn
            self.transport.pause_reading()
            if self.lone_polls and not self._write_paused:
                self._parse_later()

    def _parse_later(self) -> None:
        if not self._parse_scheduled:
            self._parse_scheduled = True
            asyncio.get_running_loop().call_soon(self.parse_more)

    def parse_more(self) -> None:
        """Carry out the next batch of the requests a read held past ``BATCH``.

        Meanwhile reading is paused, and this runs once a turn of the loop: after
        every other connection's reads of that turn. It stops, with the rest left in
        the parser, while reading is paused for another cause (a reply held, replies
        not taken by the socket); what resumes reading then resumes it.
        """
        self._parse_scheduled = False
        session = self.session
        if session is None or not self.lone_polls or self._write_paused:
            return  # closed, or paused: _resume_reading comes back here
        self._carry_out(session, self.parser.feed(b""))
        if self.lone_polls and not self._write_paused:
            self._resume_reading()

    def _carry_out(self, session: Session[bytes], requests: list[Request]) -> None:
        if self.hub.debug:
            for request in requests:
                log.debug("client %d: %s", session.id, describe(request))
            waiting = self.parser.waiting
            if waiting is not None:
                log.debug("client %d: waiting for %s", session.id, waiting)
        if requests:
            session.receive(requests)
            self._flush()

    def _resume_reading(self) -> None:
        """Read again: first the requests left in the parser, a batch a turn."""
        if self.parser.more:
            self._parse_later()
        else:
            self.transport.resume_reading()  # type: ignore[union-attr]  # open: see callers

    # -- the pump --------------------------------------------------------------

    def answer_polls(self, now: int) -> None:
        """Answer the lone polls received (see ``batch_polls_above``), and push what
        is queued (push mode).

        Deferred to the end of the loop's turn, the answer also carries what the
        turn's publishes queued, and the turn's answers are written together.
        """
        if self._push_scheduled:
            self._push(now)
        polls = self.polls
        self.polls = 0
        if not polls or not self.lone_polls:  # answered already, or closed meanwhile
            return
        session: Session[bytes] = self.session  # type: ignore[assignment]  # lone_polls: set
        try:
            reply = session.poll(now)
            if polls > 1:  # back-to-back polls: the first takes everything
                reply = b"".join([reply, *(session.poll(now) for _ in range(polls - 1))])
        except Exception:
            log.exception("client %d: internal error", session.id)
            session.close(CloseReason.INTERNAL_ERROR, INTERNAL_ERROR)
            return  # closing flushed
        self.hub.bytes_sent += len(reply)
        self.transport.write(reply)  # type: ignore[union-attr]
        if self._write_paused:  # the buffer is past its high-water mark
            self.limit_unsent()
        if self.draining:
            self._close_if_drained()

    def _flush(self) -> None:
        """Write what the session has to send; close, or pause reading, as it says."""
        session = self.session
        transport = self.transport
        if session is None or transport is None:
            return
        out = session.data_to_send()
        if out:
            reply = out[0] if len(out) == 1 else b"".join(out)
            self.hub.bytes_sent += len(reply)
            transport.write(reply)
            if self._write_paused and session.close_reason is None:
                self.limit_unsent()  # closing flushed, if it closed
        if session.close_reason is not None:
            self._finish_close()
        elif not session.reading:
            if self.lone_polls:
                self.lone_polls = False
                self.reading_changed = self.hub.tick
            transport.pause_reading()  # a reply is held open: later requests wait
        elif not self.lone_polls:  # the held reply went out
            self.lone_polls = True
            if not self._write_paused:
                self.reading_changed = self.hub.tick
                self._resume_reading()
        if session.push_due:
            self._schedule_push()
        if self.draining:
            self._close_if_drained()

    def _push(self, now: int) -> None:
        self._push_scheduled = False
        session = self.session
        if session is not None and session.push_due and not self._write_paused:
            session.push(now)
            self._flush()

    def _schedule_push(self) -> None:
        """Push mode: push what is queued at the end of this turn of the loop, once,
        unless the client is not taking what was written (then ``resume_writing``)."""
        session = self.session
        if (
            session is not None
            and session.push_due
            and not self._push_scheduled
            and not self._write_paused
            and session.close_reason is None
        ):
            self._push_scheduled = True
            self.hub.defer_push(self)

    # Calling a connection flushes it: its session's ``on_wake`` is the connection
    # itself, so that no bound method is kept per client.
    __call__ = _flush

    def close(self, reason: CloseReason) -> None:
        """Close for ``reason`` (idle timeout, shutdown: with ``SERVER_ERROR shutting
        down``): first reason wins."""
        session = self.session
        if session is not None:
            if reason is CloseReason.IDLE_TIMEOUT and session.close_reason is None:
                missing = self.parser.incomplete
                if missing is not None:
                    log.info(
                        "client %d from %s: idle timeout while waiting for %s",
                        session.id,
                        self.peer,
                        missing,
                    )
            error = SHUTTING_DOWN if reason is CloseReason.SHUTDOWN else None
            session.close(reason, error)  # wakes _flush, which closes
        elif self._reason is None:
            self._reason = reason
            self._finish_close()

    @property
    def unsent(self) -> int:
        """Bytes written to the client but not yet taken by its socket."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def limit_unsent(self) -> None:
        """Count the bytes not yet taken by the socket against ``max_queued_bytes``:
        close as a slow consumer if they and the payload bytes queued pass it; else,
        while the buffer is above its high-water mark, leave the queue only the rest
        (``resume_writing`` gives it all back)."""
        session = self.session
        transport = self.transport
        if session is None or transport is None or session.close_reason is not None:
            return
        unsent = transport.get_write_buffer_size()
        if not unsent:
            return
        queue = session.queue
        queued = queue.bytes
        limit = self.hub.config.max_queued_bytes
        if unsent + queued <= limit:
            queue.max_bytes = limit - unsent if self._write_paused else limit
            return
        log.warning(
            "client %d from %s is a slow consumer (%d bytes of replies not taken by its socket "
            "and %d queued, past max_queued_bytes %d): closing it",
            session.id,
            self.peer,
            unsent,
            queued,
            limit,
        )
        session.queue.close()  # it takes nothing: queue nothing more for it
        session.close(CloseReason.SLOW_CONSUMER, SLOW_CONSUMER)  # wakes _flush, which closes

    def time_out_idle(self, before: float) -> None:
        """Close for the idle timeout unless reading paused or resumed since before
        ``before`` (a ``hub.tick``; the caller has checked ``last_seen`` against it):
        while the server does not read, what the client sends is not seen. Reading
        paused since before ``before`` (replies not taken, or a reply held) counts."""
        if self.reading_changed < before:
            self.close(CloseReason.IDLE_TIMEOUT)

    def time_out_request(self, before: float) -> None:
        """Close with ``CLIENT_ERROR incomplete request`` if a request begun is still
        incomplete, and reading has been on without a byte since before ``before`` (a
        ``hub.tick``; the caller has checked ``last_seen`` against it)."""
        if not self.lone_polls or self._write_paused or self.reading_changed >= before:
            return  # reading is paused (a reply held, writes not drained), or was lately
        missing = self.parser.incomplete
        if missing is None:
            return
        session: Session[bytes] = self.session  # type: ignore[assignment]  # lone_polls: set
        timeout = self.hub.config.request_timeout
        log.info(
            "client %d from %s: request timeout: nothing for %g s while waiting for %s",
            session.id,
            self.peer,
            timeout,
            missing,
        )
        error = FramingError(f"incomplete request: waited {timeout:g} s for {missing}")
        session.close(CloseReason.REQUEST_TIMEOUT, error)  # wakes _flush, which closes

    def drain(self) -> None:
        """Its turn in the server's drain: close with ``SERVER_ERROR shutting down`` now
        if nothing waits for it, else as soon as nothing does (after the poll that
        empties its queue, the reply held or the request half-read)."""
        if self.session is None or self.reason is not None:
            return
        self.draining = True
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        session = self.session
        if (
            session is not None
            and session.reading  # open, and holding no reply
            and not session.queue.entries
            and self.parser.idle
            and not self.polls  # no lone poll waiting for the end of the loop's turn
            and not self.unsent  # every answer taken by the socket (the drain looks again)
        ):
            self.close(CloseReason.SHUTDOWN)

    def abort(self) -> None:
        """Drop the connection without flushing (it did not drain after a close)."""
        if self.transport is not None:
            self.transport.abort()

    def _finish_close(self) -> None:
        """Close, once the reason is set: counted now, not once the client has read
        what is left (which a slow consumer may never do)."""
        self.lone_polls = False
        if not self.closed_at:
            self.closed_at = self.hub.tick or 1e-9  # not 0: closed
            self.hub.closed(self.reason)  # type: ignore[arg-type]  # set before closing
        if self.transport is not None:
            self.transport.close()
