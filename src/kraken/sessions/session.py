"""One client's session: requests in, broker calls, replies out. No I/O.

A transport (TCP today; WebSocket and SSE next) owns the socket and the bytes.
It parses what it reads into requests, hands them to ``Session.receive``, writes
what ``data_to_send`` returns, and closes when ``close_reason`` is set. The
session owns what a client is: its identity, its queue in the broker, the order
of its replies and why it closes. It never knows its transport; its replies are
built by a ``Dialect``: bytes for the memcached dialect, reply objects for
others.

Rule 1: replies leave in the order of their requests. A broker answer that comes
later (``Pending``) holds the session: the requests after it wait unprocessed,
``reading`` turns False so that the transport stops reading meanwhile, and
``on_wake`` tells the transport when there is more to send.
Rule 2: messages for the client wait in its ``ClientQueue``, which every broker
keeps in this process; a poll drains it, and only a poll that asks for the
horizon too goes to the broker (``Broker.poll``), which answers both at once.
Rule 3: the ``Authorizer`` is asked before every subscribe and every publish,
after the per-client limits: a subscribe may not take the client past
``max_subscriptions`` topics, nor a published message name more than
``max_topics_per_message``. A refused request changes nothing.
Rule 4: a session closes once, for one ``CloseReason``. What closes it from
outside a ``receive`` (its queue overflowing on another client's publish) is
told through ``on_wake`` too.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from kraken.brokers.base import Broker, Pending, Polled
from kraken.errors import (
    BadHorizon,
    Forbidden,
    ProtocolError,
    ServerError,
    TooManySubscriptions,
    TooManyTopics,
)
from kraken.routing import ClientQueue, Delivery
from kraken.routing.queue import NO_ENTRIES
from kraken.types import Entry, Topics
from kraken.wire.requests import (
    Get,
    Publish,
    Push,
    Quit,
    Register,
    Rejected,
    Request,
    RetroSubscribe,
    Subscribe,
    Unsubscribe,
    Version,
)

log = logging.getLogger("kraken.session")

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
Q = TypeVar("Q")
X = TypeVar("X")

MAX_HORIZON_AHEAD = 60_000_000  # microseconds a retro_subscribe horizon may lie in the future
# the defaults of Config.max_subscriptions_per_client and Config.max_topics_per_message
MAX_SUBSCRIPTIONS = 10_000
MAX_TOPICS_PER_MESSAGE = 10_000
SLOW_CONSUMER = ServerError("slow consumer", closes=True)
INTERNAL_ERROR = ServerError("internal error", closes=True)


class CloseReason(enum.Enum):
    """Why a client's connection ended: exactly one per connection, logged once."""

    CLIENT_CLOSED = "client closed the connection"
    CONNECTION_RESET = "connection lost with an error"
    CLIENT_QUIT = "client sent quit"
    FRAMING_ERROR = "framing error"
    SLOW_CONSUMER = "slow consumer"
    IDLE_TIMEOUT = "idle timeout"
    REQUEST_TIMEOUT = "request timeout"
    TOO_MANY_CLIENTS = "too many clients"
    INTERNAL_ERROR = "internal error"
    SHUTDOWN = "server shutdown"
    STATE_LOST = "state lost"  # the broker lost messages for it (a proxy's upstream)


class Identity(Protocol):
    """Who the client is, as its transport knows it; what an ``Authorizer`` decides on.

    ``ClientIdentity`` is the plain one; a transport's connection object may be its
    own (the TCP ``Connection`` is), so that a client costs no object more.
    """

    @property
    def via(self) -> str:
        """The transport: "tcp", later "websocket", "sse", "http"."""
        ...

    @property
    def peer(self) -> str:
        """ "host:port", or "?" when unknown."""
        ...

    @property
    def claims(self) -> Mapping[str, Any] | None:
        """From a verified token; None without one."""
        ...


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """An ``Identity`` as a value."""

    via: str
    peer: str
    claims: Mapping[str, Any] | None = None


class Authorizer(Protocol):
    """Decides which topics a client may subscribe and publish to.

    Each check returns None to allow, or the ``Forbidden`` error the client gets:
    then nothing of the request takes effect.
    """

    def check_subscribe(self, identity: Identity, topics: Topics) -> Forbidden | None: ...

    def check_publish(self, identity: Identity, entries: Sequence[Entry]) -> Forbidden | None: ...


class AllowAll:
    """The default ``Authorizer``: every client may use every topic."""

    def check_subscribe(self, identity: Identity, topics: Topics) -> Forbidden | None:
        return None

    def check_publish(self, identity: Identity, entries: Sequence[Entry]) -> Forbidden | None:
        return None


class Dialect(Protocol[R_co]):
    """How a session's replies are built for one protocol: ``R`` is bytes for the
    memcached dialect, a reply object for others."""

    @property
    def stored(self) -> R_co:
        """The reply of a request carried out (``STORED``)."""
        ...

    @property
    def not_found(self) -> R_co:
        """The reply of a subscribe whose horizon the history no longer covers."""
        ...

    def error(self, error: ProtocolError) -> R_co: ...

    def version(self) -> R_co: ...

    def messages(self, deliveries: list[Delivery]) -> R_co:
        """The answer to a lone poll (``get messages``)."""
        ...

    def values(self, keys: Sequence[bytes], polled: Polled) -> R_co:
        """The answer to ``get`` with ``keys``: each ``messages`` key takes the polled
        deliveries (the first one gets them all), ``horizon`` the horizon."""
        ...

    def pushed(self, polled: Polled, stamps: bool) -> R_co:
        """What a client in push mode is sent unasked: the deliveries taken from its
        queue and the horizon (see ``Session.push``), with each delivery's stamp if
        ``stamps``."""
        ...


class _Replies(list[X]):
    """The replies of several requests answered at once (a run of publishes)."""

    __slots__ = ()


_NO_REPLIES: list[Any] = []  # shared by every session with nothing to send: never appended to


class _Held:
    """A session waiting for a broker answer, and the requests received meanwhile."""

    __slots__ = ("backlog", "pending")

    def __init__(self, pending: Pending[Any], backlog: list[Request]) -> None:
        self.pending = pending
        self.backlog = backlog


class SessionContext(Generic[R]):
    """What the sessions of one server share: the broker, the dialect of their
    replies, the clock, the error counts and the authorizer. Each session keeps a
    reference to it, not a copy of each.

    ``clock`` gives the time in Unix microseconds; ``errors`` counts error replies
    by kind (``ProtocolError.kind``). ``max_subscriptions`` bounds the topics one
    client may hold, ``max_topics_per_message`` the topics a published message names.
    """

    __slots__ = (
        "authorizer",
        "broker",
        "clock",
        "dialect",
        "errors",
        "max_subscriptions",
        "max_topics",
        "nothing",
        "open",
    )

    def __init__(
        self,
        broker: Broker,
        dialect: Dialect[R],
        *,
        clock: Callable[[], int],
        errors: Counter[str] | None = None,
        authorizer: Authorizer | None = None,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        max_topics_per_message: int = MAX_TOPICS_PER_MESSAGE,
    ) -> None:
        self.broker = broker
        self.dialect = dialect
        self.clock = clock
        self.max_subscriptions = max_subscriptions
        self.max_topics = max_topics_per_message
        self.errors: Counter[str] = errors if errors is not None else Counter()
        self.authorizer: Authorizer = authorizer or AllowAll()
        self.nothing: R = dialect.messages([])  # the answer to a poll that finds nothing
        # the authorizer lets everything through: a run of publishes is one broker call
        self.open = self.authorizer.__class__ is AllowAll


def _horizon_only(horizon: int) -> Polled:
    return [], horizon


def _too_wide(entries: Sequence[Entry], most: int) -> bool:
    """True when a message of ``entries`` names more than ``most`` topics."""
    for topics, _ in entries:  # noqa: SIM110 - on the publish path: cheaper than any()
        if len(topics) > most:
            return True
    return False


def _too_many_topics(entries: Sequence[Entry], most: int) -> TooManyTopics:
    named = max(len(topics) for topics, _ in entries)
    return TooManyTopics(
        f"too many topics: {named} in one message exceeds max_topics_per_message {most}"
    )


# A handler carries out one kind of request: its reply, None for no reply, or a
# pending reply. The table is typed where each handler is registered.
Handler = Callable[["Session[Any]", Any], Any]
_HANDLERS: dict[type, Handler] = {}


def _handles(kind: type[Q]) -> Callable[[Callable[[Session[Any], Q], object]], Handler]:
    """Register the decorated method as the handler of requests of class ``kind``."""

    def register(handler: Callable[[Session[Any], Q], object]) -> Handler:
        _HANDLERS[kind] = handler
        return handler

    return register


class Session(Generic[R]):
    """The sans-I/O session of one client over a ``Broker``; see the module's rules."""

    __slots__ = (
        "_held",
        "_out",
        "_push_stamps",
        "_push_waits",
        "_pushing",
        "_receiving",
        "close_reason",
        "context",
        "identity",
        "last_poll",
        "now",
        "on_wake",
        "push_due",
        "queue",
        "reading",
    )

    def __init__(
        self,
        context: SessionContext[R],
        identity: Identity,
        *,
        on_wake: Callable[[], None] | None = None,
        on_push: Callable[[], None] | None = None,
    ) -> None:
        """``on_wake`` is called when there is output or a close outside of
        ``receive``; ``on_push``, when set, each time the queue becomes non-empty
        (a push transport's cue to drain it)."""
        self.context = context
        self.identity = identity
        self.on_wake = on_wake
        self.close_reason: CloseReason | None = None
        # False while a reply is held open or after a close: the transport stops reading
        self.reading = True
        self.last_poll = 0  # Unix microseconds of the last poll for messages, 0 if none
        self.now = 0  # the time of the requests being carried out (clock() once per batch)
        self._out: list[R] = _NO_REPLIES  # a list of its own once there is a reply
        self._held: _Held | None = None  # the broker answer it waits for, and what waits
        self._receiving = False
        # push mode (``set push``): its queue calls _queued when it gets a message, and
        # push_due tells the transport to call push at the end of the loop's turn
        self._pushing = False
        self._push_stamps = False  # pushes give each message's stamp
        self._push_waits = False  # a push waits for the broker: the next waits for it
        self.push_due = False
        self.queue: ClientQueue = context.broker.connect(self._overflowed)
        if on_push is not None:
            self.queue.on_ready = on_push

    # -- the transport's side ----------------------------------------------------

    def receive(self, requests: Sequence[Request]) -> None:
        """Carry out ``requests`` in order; their replies wait in ``data_to_send``."""
        if not self.reading:  # held, or closed
            if self.close_reason is None and self._held is not None:
                self._held.backlog.extend(requests)
            return
        self._receiving = True
        out = self._out
        if out is _NO_REPLIES:
            out = self._out = []
        handlers = _HANDLERS
        context = self.context
        self.now = context.clock()
        i = 0
        n = len(requests)
        while i < n:
            request = requests[i]
            i += 1
            try:
                if request.__class__ is Publish and context.open:
                    # a run of publishes is one broker call (the hot path of publishers)
                    i, reply = self._publish_run(requests, i - 1, n)
                else:
                    reply = handlers[request.__class__](self, request)
            except Exception:
                log.exception("client %d: internal error on %r", self.id, request)
                self.close(CloseReason.INTERNAL_ERROR, INTERNAL_ERROR)
                break
            if self.close_reason is not None:  # quit, a framing error, its own overflow
                break
            if reply is not None:
                if reply.__class__ is Pending:
                    self._hold(reply, requests[i:])
                    return
                if reply.__class__ is _Replies:
                    out.extend(reply)
                else:
                    out.append(reply)
        self._receiving = False
        self.now = 0  # an idle session keeps no time

    def _publish_run(self, requests: Sequence[Request], start: int, n: int) -> tuple[int, Any]:
        """Publish ``requests[start]`` and the publishes right after it in one broker
        call (messages are stamped in order, as by one call each); the index after
        the run, and the run's replies: one STORED per publish without noreply. A
        publish naming too many topics in a message ends the run; if it starts the
        run it is refused alone."""
        context = self.context
        most = context.max_topics
        end = start
        while end < n:
            candidate = requests[end]
            if not isinstance(candidate, Publish) or _too_wide(candidate.entries, most):
                break
            end += 1
        if end == start:  # requests[start] is a publish naming too many topics
            refused: Publish = requests[start]  # type: ignore[assignment]
            error = _too_many_topics(refused.entries, most)
            return end + 1, self._rejected(error, refused.noreply)
        stored = context.dialect.stored
        if end == start + 1:
            request: Publish = requests[start]  # type: ignore[assignment]
            stamp = context.broker.publish(self.queue, request.entries, context.clock)
            reply: Any = None if request.noreply else stored
        else:
            entries: list[Entry] = []
            replies: _Replies[R] = _Replies()
            for request in requests[start:end]:  # type: ignore[assignment]
                entries.extend(request.entries)
                if not request.noreply:
                    replies.append(stored)
            stamp = context.broker.publish(self.queue, entries, context.clock)
            reply = replies or None
        if stamp.__class__ is Pending:
            return end, self._after(stamp, reply)
        return end, reply

    def data_to_send(self) -> list[R]:
        """The replies ready to go, in order (each taken once)."""
        out = self._out
        self._out = _NO_REPLIES  # an idle session keeps no list
        return out

    def poll(self, now: int) -> R:
        """The reply to a lone ``get messages`` at ``now`` (Unix microseconds): the
        transport's fast path, which skips the parser. Only while ``reading``; the
        reply is returned, not queued. Like a plain poll in a pipeline, it drains the
        client's queue, which every broker keeps in this process."""
        self.last_poll = now
        queue = self.queue
        entries = queue.entries
        if not entries:
            return self.context.nothing
        # queue.drain(), written out: the hot path of pollers
        queue.received += len(entries)
        queue.entries = NO_ENTRIES
        queue.bytes = 0
        return self.context.dialect.messages(entries)

    @property
    def pushing(self) -> bool:
        """True once the client asked for push mode (``set push``)."""
        return self._pushing

    def push(self, now: int) -> None:
        """Push mode: take what is queued and the horizon (the broker's ``poll``, as
        ``get messages horizon`` does) into one reply sent unasked, after the replies
        before it. The transport calls it once ``push_due`` is set, at most once a turn
        of its loop, so that one reply carries everything queued meanwhile."""
        if self._push_waits:  # pushes leave in order: this one once that one is in
            return
        self.push_due = False
        if self.close_reason is not None or not self.queue.entries:
            return
        self.last_poll = now
        polled = self.context.broker.poll(self.queue, now)
        dialect = self.context.dialect
        if not isinstance(polled, Pending):
            self._replies().append(dialect.pushed(polled, self._push_stamps))
            return
        self._push_waits = True

        def settled(done: Pending[Polled]) -> None:
            self._push_waits = False
            if self.close_reason is not None:
                return
            try:
                self._replies().append(dialect.pushed(done.result(), self._push_stamps))
            except ServerError as error:  # the messages were taken: the client must know
                self.context.errors[error.kind] += 1
                self.close(CloseReason.INTERNAL_ERROR, error)
                return
            if not self._receiving and self.on_wake is not None:
                self.on_wake()

        polled.add_done_callback(settled)

    def _queued(self) -> None:
        """The queue got a message while empty (``on_ready``, in push mode)."""
        if not self.push_due:
            self.push_due = True
            if not self._receiving and self.on_wake is not None:
                self.on_wake()  # the transport sees push_due

    def take_messages(self) -> list[Delivery]:
        """Drain the queue for a push transport (after ``on_push``)."""
        return self.queue.drain()

    def close(self, reason: CloseReason, error: ProtocolError | None = None) -> None:
        """Close for ``reason`` (first reason wins); ``error``'s reply is sent last."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self.reading = False
        self._held = None
        if error is not None:
            self._replies().append(self.context.dialect.error(error))
        if not self._receiving and self.on_wake is not None:
            self.on_wake()

    def disconnected(self, reason: CloseReason) -> CloseReason:
        """The transport is gone: leave the broker. The reason the session ends with."""
        if self.close_reason is None:
            self.close_reason = reason
        self.reading = False
        self._held = None
        self._out = _NO_REPLIES
        self.on_wake = None  # nothing more to send: no reference back to the transport
        self.context.broker.disconnect(self.queue)
        self.queue.close()  # its messages go now (and its reference back to the session)
        return self.close_reason

    # -- requests ----------------------------------------------------------------

    @property
    def id(self) -> int:
        """The client's id: its queue's, unique in the broker."""
        return self.queue.id

    def _replies(self) -> list[R]:
        """The list the next replies go to."""
        out = self._out
        if out is _NO_REPLIES:
            out = self._out = []
        return out

    def _hold(self, pending: Pending[Any], rest: Sequence[Request]) -> None:
        self._held = _Held(pending, list(rest))
        self.reading = False
        self._receiving = False
        pending.add_done_callback(self._settled)  # at once, if it settled already

    def _settled(self, pending: Pending[Any]) -> None:
        held = self._held
        if held is None or pending is not held.pending:
            return  # closed meanwhile
        self._held = None
        self.reading = True
        try:
            reply = pending.result()
        except ServerError as error:
            self.context.errors[error.kind] += 1
            reply = self.context.dialect.error(error)
        if reply.__class__ is _Replies:
            self._replies().extend(reply)
        elif reply is not None:
            self._replies().append(reply)
        if held.backlog:
            self.receive(held.backlog)
        if self.on_wake is not None:
            self.on_wake()

    def _rejected(self, error: ProtocolError, noreply: bool) -> R | None:
        self.context.errors[error.kind] += 1
        return None if noreply else self.context.dialect.error(error)

    def _answer(self, answer: Any, reply: Callable[[Any], X]) -> X | Pending[X]:
        """``reply(answer)``, now or when a pending ``answer`` settles."""
        if answer.__class__ is Pending:
            return answer.then(reply)
        return reply(answer)

    def _after(self, done: Pending[Any], reply: Any) -> Pending[Any]:
        """``reply`` once the pending ``done`` settles; if it fails, its error in place
        of each reply that ``reply`` stands for: one per publish of a run, none for a
        ``noreply`` request (as any error that keeps the connection)."""
        answer: Pending[Any] = Pending()

        def settled(done: Pending[Any]) -> None:
            try:
                done.result()
            except ServerError as error:
                answer.resolve(self._failed(error, reply))
                return
            answer.resolve(reply)

        done.add_done_callback(settled)
        return answer

    def _failed(self, error: ServerError, reply: Any) -> Any:
        many = len(reply) if reply.__class__ is _Replies else int(reply is not None)
        self.context.errors[error.kind] += max(many, 1)
        line = self.context.dialect.error(error)
        if reply.__class__ is _Replies:
            return _Replies([line] * many)
        return None if reply is None else line

    def _stored_or_not_found(self, stored: bool) -> R:
        return self.context.dialect.stored if stored else self.context.dialect.not_found

    @_handles(Get)
    def _get(self, request: Get) -> R | Pending[R]:
        keys = request.keys
        now = self.now
        if keys == (b"messages",):
            self.last_poll = now
            return self.context.dialect.messages(self.queue.drain())
        polled: Polled | Pending[Polled]
        if b"messages" in keys:
            self.last_poll = now
            if b"horizon" in keys:
                polled = self.context.broker.poll(self.queue, now)
            else:
                polled = (self.queue.drain(), None)
        elif b"horizon" in keys:
            polled = self._answer(self.context.broker.horizon(now), _horizon_only)
        else:
            polled = ([], None)
        dialect = self.context.dialect
        if isinstance(polled, Pending):
            return polled.then(lambda polled: dialect.values(keys, polled))
        return dialect.values(keys, polled)

    @_handles(Publish)
    def _publish(self, request: Publish) -> R | Pending[R | None] | None:
        entries = request.entries
        most = self.context.max_topics
        if _too_wide(entries, most):
            return self._rejected(_too_many_topics(entries, most), request.noreply)
        denied = self.context.authorizer.check_publish(self.identity, entries)
        if denied is not None:
            return self._rejected(denied, request.noreply)
        stamp = self.context.broker.publish(self.queue, entries, self.context.clock)
        reply = None if request.noreply else self.context.dialect.stored
        return self._after(stamp, reply) if isinstance(stamp, Pending) else reply

    def _over_subscribed(self, topics: Topics) -> TooManySubscriptions | None:
        """The error of a subscribe to ``topics`` that would take the client past
        ``max_subscriptions`` topics (those it holds already do not count again)."""
        subscriptions = self.queue.subscriptions
        held = len(subscriptions)
        most = self.context.max_subscriptions
        if held + len(topics) <= most:
            return None
        new = len(set(topics).difference(subscriptions))
        if held + new <= most:
            return None
        return TooManySubscriptions(
            f"too many subscriptions: {held} held + {new} new exceeds "
            f"max_subscriptions_per_client {most}"
        )

    @_handles(Subscribe)
    def _subscribe(self, request: Subscribe) -> R | Pending[R | None] | None:
        over = self._over_subscribed(request.topics)
        if over is not None:
            return self._rejected(over, request.noreply)
        denied = self.context.authorizer.check_subscribe(self.identity, request.topics)
        if denied is not None:
            return self._rejected(denied, request.noreply)
        stored = self.context.broker.subscribe(self.queue, request.topics, self.now)
        return self._maybe(stored, request.noreply)

    @_handles(RetroSubscribe)
    def _retro_subscribe(self, request: RetroSubscribe) -> R | Pending[R | None] | None:
        now = self.now
        if request.horizon > now + MAX_HORIZON_AHEAD:
            return self._rejected(BadHorizon(), request.noreply)
        over = self._over_subscribed(request.topics)
        if over is not None:
            return self._rejected(over, request.noreply)
        denied = self.context.authorizer.check_subscribe(self.identity, request.topics)
        if denied is not None:
            return self._rejected(denied, request.noreply)
        stored = self.context.broker.retro_subscribe(
            self.queue, request.horizon, request.topics, now
        )
        return self._maybe(stored, request.noreply)

    def _maybe(self, stored: bool | Pending[bool], noreply: bool) -> R | Pending[R | None] | None:
        if isinstance(stored, Pending):
            return self._after(stored, None) if noreply else stored.then(self._stored_or_not_found)
        if noreply:
            return None
        return self.context.dialect.stored if stored else self.context.dialect.not_found

    @_handles(Unsubscribe)
    def _unsubscribe(self, request: Unsubscribe) -> R | Pending[R | None] | None:
        done = self.context.broker.unsubscribe(self.queue, request.topics)
        reply = None if request.noreply else self.context.dialect.stored
        return self._after(done, reply) if isinstance(done, Pending) else reply

    @_handles(Register)
    def _register(self, request: Register) -> R | Pending[R | None] | None:
        done = self.context.broker.register(self.queue, self.now)
        reply = None if request.noreply else self.context.dialect.stored
        return self._after(done, reply) if isinstance(done, Pending) else reply

    @_handles(Push)
    def _push(self, request: Push) -> R | None:
        self._push_stamps = request.stamps  # a later set push sets the options anew
        if not self._pushing:
            self._pushing = True
            self.queue.on_ready = self._queued
            if self.queue.entries:  # queued before: pushed at the end of the turn
                self.push_due = True
        return None if request.noreply else self.context.dialect.stored

    @_handles(Rejected)
    def _reject(self, request: Rejected) -> R | None:
        error = request.error
        if error.closes:
            self.context.errors[error.kind] += 1
            if error.__cause__ is not None:  # the parser failed (ParserFailure): a bug
                log.error("client %d: %s", self.id, error, exc_info=error.__cause__)
                self.close(CloseReason.INTERNAL_ERROR, error)
                return None
            log.info("client %d: %s", self.id, error.reply.decode().strip())
            self.close(CloseReason.FRAMING_ERROR, error)
            return None
        return self._rejected(error, request.noreply)

    @_handles(Version)
    def _version(self, request: Version) -> R:
        return self.context.dialect.version()

    @_handles(Quit)
    def _quit(self, request: Quit) -> None:
        self.close(CloseReason.CLIENT_QUIT)

    # -- events from the broker ----------------------------------------------------

    def _overflowed(self) -> None:
        lost = self.queue.lost
        if lost is not None:
            self.close(CloseReason.STATE_LOST, ServerError(lost, closes=True))
            return
        log.warning(
            "client %d from %s is a slow consumer (queue past max_queued_messages %d or its "
            "byte limit %d: max_queued_bytes less any replies its transport has not sent "
            "yet): closing it",
            self.id,
            self.identity.peer,
            self.queue.max_messages,
            self.queue.max_bytes,
        )
        self.close(CloseReason.SLOW_CONSUMER, SLOW_CONSUMER)
