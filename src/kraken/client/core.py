"""What both clients share, without I/O: per-server state, the requests that
resume a connection without loss, and the meaning of each reply.

The rule that makes resuming lossless: every poll is ``get messages horizon``,
whose horizon H is atomic with the messages returned — everything published up
to H was in this answer or an earlier one. After a lost connection the client
re-subscribes with ``retro_subscribe H``, so the new connection queues everything
published since. When the server answers NOT_FOUND (its buffer no longer reaches
back to H, or it restarted) the messages are gone for good and the application
is told (``StateLost``) so it reloads from its datastore.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from kraken.client.sharding import Shards
from kraken.errors import (
    BadTopic,
    ClientError,
    ConnectionLost,
    ErrorReply,
    RegistrationTooOld,
    SlowConsumer,
    StateLost,
)
from kraken.wire import (
    Entry,
    Get,
    Publish,
    Request,
    RetroSubscribe,
    Subscribe,
    Unsubscribe,
    Version,
    encode_request,
    format_horizon,
    parse_horizon,
    parse_publish_block,
)
from kraken.wire.parser import MAX_TOPIC_BYTES
from kraken.wire.replies import (
    ErrorLine,
    NotFound,
    Reply,
    ReplyError,
    ReplyParser,
    Stored,
    Values,
    VersionReply,
)

T = TypeVar("T")

Payload = bytes | str
OnStateLost = Callable[[StateLost], None]
OnLinkEvent = Callable[[str], None]  # one line: connected, lost, reconnected and resumed


@dataclass(frozen=True, slots=True)
class Message:
    """A received message: the subscribed topics it was published to, and its payload."""

    topics: tuple[bytes, ...]
    payload: bytes


def as_bytes(value: Payload) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


_NOT_IN_TOPIC = re.compile(rb"[\x00-\x20\x7f]")  # spaces separate topics on the wire


def as_topics(topics: Iterable[Payload] | Payload) -> tuple[bytes, ...]:
    """The topics as bytes, each once; ClientError (before anything is sent) for no topic,
    and BadTopic for one the server would refuse or split: empty, with a space or a
    control byte, or longer than 250 bytes."""
    if isinstance(topics, str | bytes):
        topics = [topics]
    names = tuple(dict.fromkeys(as_bytes(t) for t in topics))
    if not names:
        raise ClientError("no topics given")
    for name in names:
        if not name or len(name) > MAX_TOPIC_BYTES or _NOT_IN_TOPIC.search(name):
            shown = name[:60].decode("utf-8", "backslashreplace")
            raise BadTopic(f"bad topic {shown!r}: {_topic_problem(name)}")
    return names


def _topic_problem(name: bytes) -> str:
    if not name:
        return "empty"
    if len(name) > MAX_TOPIC_BYTES:
        return f"{len(name)} bytes, more than {MAX_TOPIC_BYTES}"
    return "a topic may not hold a space or a control byte"


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"server address must be host:port, got {address!r}")
    return host, int(port)


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(0, delay)

    def reset(self) -> None:
        self.attempt = 0


class Broken(Exception):
    """The connection failed or the server closed it; ``slow`` if for slow consumption."""

    def __init__(self, why: str, slow: bool = False) -> None:
        super().__init__(why)
        self.slow = slow


def server_error(reply: ErrorLine) -> Broken:
    """What a ``SERVER_ERROR`` line means: the server closes the connection after it.
    ``SERVER_ERROR shutting down`` is a graceful stop: reconnect (to a restarted server,
    or a load balancer's next one) and resume, as after any cut."""
    if reply.reason == "shutting down":
        return Broken("the server is shutting down")
    return Broken(reply.reason, slow=reply.reason == "slow consumer")


class ServerState:
    """What a client must remember about one server to resume without loss."""

    __slots__ = ("horizon", "name", "replay_lost", "topics")

    def __init__(self, name: str) -> None:
        self.name = name
        self.topics: dict[bytes, None] = {}  # subscribed, in subscription order
        self.horizon: bytes | None = None  # everything up to it reached the application
        self.replay_lost = False  # the next resume cannot replay: subscribe afresh

    def broken(self, error: Broken) -> None:
        """The connection broke. After a slow-consumer close a replay would overflow
        the same queue limit again (it holds at least the messages that did), so the
        next connection subscribes afresh and the loss is reported instead."""
        if error.slow and self.topics:
            self.replay_lost = True

    def reach_back(self, horizon: bytes) -> None:
        """Messages since ``horizon`` were queued but not yet polled: a resume must
        replay from there, not from a later poll's horizon."""
        if self.horizon is None or parse_horizon(self.horizon) > parse_horizon(horizon):
            self.horizon = horizon

    def resume_requests(self) -> list[Request]:
        """Sent first on every new connection: the horizon now, then the subscriptions."""
        requests: list[Request] = [Get((b"horizon",))]
        if self.topics:
            topics = tuple(self.topics)
            if self.horizon is None or self.replay_lost:
                requests.append(Subscribe(topics))
            else:
                requests.append(RetroSubscribe(parse_horizon(self.horizon), topics))
        return requests

    def resumed(self, replies: Sequence[Reply]) -> StateLost | None:
        """Apply the replies to ``resume_requests``; a StateLost when messages were lost."""
        now = horizon_of(replies[0])
        if self.replay_lost and len(replies) > 1:
            check(replies[1])
            self.replay_lost = False
            self.horizon = now
            return StateLost(self.name, frozenset(self.topics))
        if len(replies) == 1 or self.horizon is None:
            self.horizon = now
            if len(replies) > 1:
                check(replies[1])
            return None
        reply = replies[1]
        if isinstance(reply, NotFound):
            self.horizon = now  # from here on the new connection has it all
            return StateLost(self.name, frozenset(self.topics))
        check(reply)
        return None  # retro queued everything since self.horizon: keep it until a poll

    def polled(self, reply: Reply) -> list[Message]:
        """Apply the reply to ``get messages horizon``: the messages, in order."""
        if not isinstance(reply, Values):
            check(reply)
            raise Broken(f"unexpected reply to a poll: {reply!r}")
        block = reply.values.get(b"messages")
        self.horizon = reply.values[b"horizon"]
        if not block:
            return []
        return [Message(topics, payload) for topics, payload in parse_publish_block(block)]


POLL = encode_request(Get((b"messages", b"horizon")))


def horizon_of(reply: Reply) -> bytes:
    if not isinstance(reply, Values) or b"horizon" not in reply.values:
        check(reply)
        raise Broken(f"unexpected reply to get horizon: {reply!r}")
    return reply.values[b"horizon"]


def check(reply: Reply) -> Reply:
    """The reply itself; the error it stands for raised (SERVER_ERROR breaks the link)."""
    if isinstance(reply, ErrorLine):
        if reply.kind == b"SERVER_ERROR":
            raise server_error(reply)
        raise ErrorReply(reply.line)
    return reply


def stored(reply: Reply) -> bool:
    """True for STORED, False for NOT_FOUND; errors raised."""
    check(reply)
    if isinstance(reply, Stored):
        return True
    if isinstance(reply, NotFound):
        return False
    raise Broken(f"unexpected reply to a set: {reply!r}")


# -- the client's logic, as generators of exchanges ----------------------------------
#
# Each API call is written once, as a generator that yields ``(link, data, count)``
# — "send these bytes to that server and give me its next ``count`` replies" — and
# receives the replies. The blocking and the asyncio client each drive these
# generators with their own I/O, connection and retry handling.

# what the client API takes for topics: one name, or any iterable of names (str or bytes)
TopicNames = Iterable[Payload] | Payload
Exchange = tuple["Link", bytes, int]
Plan = Generator[Exchange, list[Reply], T]


class Link:
    """One server: its resumable state, and whatever connection the driver keeps."""

    __slots__ = (
        "address",
        "closed",
        "connection",
        "connects",
        "parser",
        "registered",
        "state",
        "up",
    )

    def __init__(self, name: str) -> None:
        self.state = ServerState(name)
        self.connects = 0  # connections made and resumed
        self.up = False  # the last connection is working (for on_link_event)
        self.registered: bytes | None = None  # horizon of a register(), until a subscribe
        self.address = parse_address(name)
        self.connection: Any = None
        self.parser = ReplyParser()
        # the server closes the connection after the replies an exchange took (a poll
        # answered, then SERVER_ERROR shutting down): the next exchange reconnects
        self.closed: Broken | None = None


class ClientLogic:
    """The API of both clients, free of I/O (see ``Client`` and ``AsyncClient``)."""

    def __init__(
        self,
        servers: str | Sequence[str],
        on_state_lost: OnStateLost | None,
        timeout: float,
        reconnect_timeout: float,
        on_link_event: OnLinkEvent | None = None,
    ) -> None:
        names = [servers] if isinstance(servers, str) else list(servers)
        self.on_link_event = on_link_event
        self._shards = Shards(names)
        self._links = {name: Link(name) for name in names}
        self.on_state_lost = on_state_lost
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        self._lost: list[StateLost] = []
        self._held: list[Message] = []

    @property
    def servers(self) -> tuple[str, ...]:
        return self._shards.servers

    @property
    def resume_horizon(self) -> bytes | None:
        """The horizon up to which every message on every server reached the application
        (the earliest over the servers), for a later ``retro_subscribe``; None before the
        first connection."""
        horizons = [link.state.horizon for link in self._links.values()]
        if not horizons or None in horizons:
            return None
        return min(horizons, key=lambda h: parse_horizon(h))  # type: ignore[arg-type]

    def owner(self, topic: Payload) -> str:
        """The server that owns ``topic``."""
        return self._shards.owner(as_bytes(topic))

    def _register(self) -> Plan[None]:
        # The server's register lives in its connection and would vanish with it; the
        # client keeps the horizon itself and makes the next subscribe a retro_subscribe.
        for link in self._links.values():
            link.registered = horizon_of((yield link, encode_request(Get((b"horizon",))), 1)[0])

    def _subscribe(self, topics: TopicNames) -> Plan[None]:
        too_old = False
        for name, group in self._shards.split(as_topics(topics)).items():
            link = self._links[name]
            registered = link.registered
            if registered is not None:
                request = encode_request(RetroSubscribe(parse_horizon(registered), tuple(group)))
            else:
                request = encode_request(Subscribe(tuple(group)))
            reply = (yield link, request, 1)[0]
            link.registered = None
            found = stored(reply)  # an error reply raises: nothing to remember
            too_old |= not found
            link.state.topics.update(dict.fromkeys(group))
            if found and registered is not None:
                link.state.reach_back(registered)
        if too_old:
            raise RegistrationTooOld("messages since the register are no longer all buffered")

    def _retro_subscribe(self, horizon: bytes | str | float, topics: TopicNames) -> Plan[None]:
        if isinstance(horizon, int | float):
            horizon = format_horizon(round(horizon * 1_000_000))
        micros = parse_horizon(as_bytes(horizon))
        too_old = False
        for name, group in self._shards.split(as_topics(topics)).items():
            link = self._links[name]
            state = link.state
            reply = (yield link, encode_request(RetroSubscribe(micros, tuple(group))), 1)[0]
            found = stored(reply)
            state.topics.update(dict.fromkeys(group))
            if not found:
                too_old = True
            else:
                state.reach_back(format_horizon(micros))
        if too_old:
            raise RegistrationTooOld(f"the server no longer has every message since {horizon!r}")

    def _unsubscribe(self, topics: TopicNames) -> Plan[None]:
        for name, group in self._shards.split(as_topics(topics)).items():
            link = self._links[name]
            for topic in group:
                link.state.topics.pop(topic, None)
            stored((yield link, encode_request(Unsubscribe(tuple(group))), 1)[0])

    def _publish_many(self, messages: Iterable[tuple[TopicNames, Payload]]) -> Plan[None]:
        batches: dict[str, list[Entry]] = {}
        for topics, payload in messages:
            data = as_bytes(payload)
            for name, group in self._shards.split(as_topics(topics)).items():
                batches.setdefault(name, []).append(Entry(tuple(group), data))
        for name, entries in batches.items():
            stored((yield self._links[name], encode_request(Publish(tuple(entries))), 1)[0])

    def _receive_messages(self) -> Plan[list[Message]]:
        # Messages polled in a call that then reports StateLost are held for the next.
        messages, self._held = self._held, []
        try:
            for link in self._links.values():
                if link.connection is None:
                    yield link, b"", 0  # connect (and resume) before anything is polled
            if not self._lost:
                for link in self._links.values():
                    messages.extend(link.state.polled((yield link, POLL, 1)[0]))
        except BaseException:
            self._held = messages
            raise
        if self._lost:
            self._held = messages
            raise self._lost.pop(0)
        return messages

    def _horizon(self) -> Plan[bytes]:
        link = next(iter(self._links.values()))
        if link.state.horizon is None:
            yield link, b"", 0
        assert link.state.horizon is not None
        return link.state.horizon

    def _version(self) -> Plan[str]:
        link = next(iter(self._links.values()))
        reply = check((yield link, encode_request(Version()), 1)[0])
        if not isinstance(reply, VersionReply):
            raise Broken(f"unexpected reply to version: {reply!r}")
        return reply.version

    # -- for the drivers -------------------------------------------------------------

    def _resume_plan(self, link: Link) -> tuple[bytes, int]:
        link.parser = ReplyParser()
        link.closed = None
        requests = link.state.resume_requests()
        return b"".join(encode_request(r) for r in requests), len(requests)

    def _resumed(self, link: Link, replies: list[Reply]) -> None:
        state = link.state
        horizon = state.horizon  # what the resume asked for, before it moves on
        lost = state.resumed(replies)
        link.up = True
        link.connects += 1
        if self.on_link_event is not None:
            if link.connects == 1:
                self.on_link_event(f"connected to {state.name}")
            elif lost is None and horizon is not None and state.topics:
                self.on_link_event(
                    f"reconnected to {state.name}; resumed {len(state.topics)} topic(s) "
                    f"from horizon {horizon.decode()}, nothing lost"
                )
            else:
                self.on_link_event(f"reconnected to {state.name}")
        if lost is not None:
            if self.on_state_lost is not None:
                self.on_state_lost(lost)
            else:
                self._lost.append(lost)

    @staticmethod
    def _replies(link: Link, data: bytes, replies: list[Reply], count: int) -> list[Reply]:
        """Feed received bytes toward ``count`` replies. A SERVER_ERROR (the server
        closes after it) breaks the link: at once if it comes before them, else once
        they are used (``Link.closed``), so that a poll answered before a graceful
        stop's ``SERVER_ERROR shutting down`` is not lost."""
        try:
            new = link.parser.feed(data)
        except ReplyError as error:
            raise Broken(str(error)) from error
        for reply in new:
            if isinstance(reply, ErrorLine) and reply.kind == b"SERVER_ERROR":
                if len(replies) < count:
                    raise server_error(reply)
                link.closed = server_error(reply)
                break
            replies.append(reply)
        return replies

    def _broken(self, link: Link, error: Exception, deadline: float, now: float) -> None:
        """Note a failed exchange; raise ConnectionLost once the bounded wait is over."""
        if isinstance(error, Broken):
            link.state.broken(error)
        if link.up:
            link.up = False
            if self.on_link_event is not None:
                self.on_link_event(f"lost the connection to {link.state.name} ({error}); retrying")
        if now >= deadline:
            raise self._give_up(link, error) from error

    def _give_up(self, link: Link, error: Exception) -> ConnectionLost:
        slow = isinstance(error, Broken) and error.slow
        kind = SlowConsumer if slow else ConnectionLost
        return kind(f"{link.state.name}: {error}")
