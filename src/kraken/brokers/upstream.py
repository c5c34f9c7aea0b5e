"""The broker of a proxy node: a ``LocalBroker`` whose topics are held upstream too.

A proxy (``kraken run --upstream HOST:PORT``) serves its clients the full
contract from its own router: local fan-out, its own retro buffer, its own
horizons. What makes it a proxy is the link to another Kraken node, which it
reaches as one client of that node (``kraken.server.upstream`` does the I/O):

- The topics its clients hold are held upstream, once each however many local
  clients hold them: the router's interest events drive ``subscribe`` and
  ``unsubscribe`` on the link. A topic whose last local subscriber leaves stays
  held for ``upstream_linger`` seconds more, so that a client that reconnects
  soon finds its history unbroken.
- A local publish is fanned out locally at once and sent upstream once; the
  publisher gets ``STORED`` when the upstream node has it, ``SERVER_ERROR`` when
  the link is down or drops first (never a false ``STORED``). The upstream node
  excludes the link from its own fan-out: no echo.
- What the upstream node pushes (the link is in push mode) is published into the
  local router, stamped on arrival, for the local subscribers.

Horizons are the proxy's own. The local buffer holds a topic's messages only
while the topic is held upstream, so ``held_since`` records, per topic, the
horizon from which it has been held without a break: a ``retro_subscribe`` (or
the subscribe after a ``register``) from an earlier horizon is ``NOT_FOUND``
for that topic, never a silent gap. After a lost link the topics are resumed
from the last horizon the upstream node pushed; when it no longer has that
history, the local clients of the topics are closed with ``SERVER_ERROR state
lost`` and the topics' history starts again (docs/cluster.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from kraken.brokers.base import Pending
from kraken.brokers.local import LocalBroker
from kraken.errors import ClientError, ServerError
from kraken.routing import ClientQueue, Router
from kraken.types import Entry, Topics
from kraken.wire import (
    Get,
    Publish,
    Request,
    RetroSubscribe,
    Subscribe,
    Unsubscribe,
    parse_horizon,
    parse_publish_block,
)
from kraken.wire.replies import ErrorLine, NotFound, Reply, Stored, Values

log = logging.getLogger("kraken.upstream")

UPSTREAM = -1  # the publisher id of messages from upstream: no local queue's
UNREACHABLE = "upstream unreachable"

OnReply = Callable[[Reply | ServerError], None]


def describe_reply(reply: Reply | ServerError) -> str:
    """A reply as a log line or an error shows it: its line, not a Python repr."""
    if isinstance(reply, ServerError):
        return reply.reason
    if isinstance(reply, ErrorLine):
        return reply.line.decode("utf-8", "replace")
    return type(reply).__name__


ENTRY_OVERHEAD = 32  # bytes of an entry's head beyond its topics: MESSAGE, length, CRLFs


def _chunks(entries: Sequence[Entry], most: int) -> list[tuple[Entry, ...]]:
    """``entries`` in runs whose publish block stays within ``most`` bytes (each entry
    alone fits: the session took it within this node's max_request_bytes)."""
    chunks: list[tuple[Entry, ...]] = []
    start = size = 0
    for i, (topics, payload) in enumerate(entries):
        entry = len(payload) + sum(map(len, topics)) + len(topics) + ENTRY_OVERHEAD
        if size + entry > most and i > start:
            chunks.append(tuple(entries[start:i]))
            start, size = i, 0
        size += entry
    chunks.append(tuple(entries[start:]))
    return chunks


class Upstream(Protocol):
    """The link to the upstream node, as the broker uses it."""

    @property
    def connected(self) -> bool:
        """True while requests can be sent (the link is up and in push mode)."""
        ...

    def send(self, request: Request, on_reply: OnReply | None = None) -> None:
        """Send ``request``; ``on_reply`` gets its reply, or a ``ServerError`` if the
        link drops first. Only while ``connected``."""
        ...

    def status(self) -> dict[str, object]:
        """The link as the admin API shows it: address, state, since, connects..."""
        ...


class UpstreamBroker(LocalBroker):
    """See the module's docstring."""

    def __init__(
        self,
        router: Router,
        max_queued_messages: int,
        max_queued_bytes: int,
        linger: int,
        clock: Callable[[], int],
        max_request_bytes: int = 8 << 20,
    ) -> None:
        super().__init__(router, max_queued_messages, max_queued_bytes)
        self.max_request_bytes = max_request_bytes  # the upstream's, as this node's
        self.linger = linger  # microseconds a topic stays held after its last subscriber
        self.clock = clock  # Unix microseconds, for what the link brings
        self.upstream: Upstream | None = None
        self.wanted: set[bytes] = set()  # topics local clients hold, or held lingering
        self.held_since: dict[bytes, int] = {}  # topic -> horizon held upstream since
        self.lingering: dict[bytes, int] = {}  # topic -> when its last subscriber left
        self.pushed_horizon: int | None = None  # the upstream horizon of the last push
        # topic -> the number of the subscribe that holds it: a reply to an older one
        # (sent before an unsubscribe that followed it) does not count
        self.holds: dict[bytes, int] = {}
        self._holds_sent = 0
        self.messages_in = 0
        self.messages_out = 0
        self.resumes = 0
        self.states_lost = 0
        self.watch_interest(self)

    def upstream_status(self) -> dict[str, object]:
        """The link and what crossed it (``/status``, ``/metrics``, ``kraken status``)."""
        link = self.upstream.status() if self.upstream is not None else {"state": "none"}
        return {
            **link,
            "topics_wanted": len(self.wanted),
            "topics_held": len(self.held_since),
            "topics_lingering": len(self.lingering),
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "resumes": self.resumes,
            "states_lost": self.states_lost,
        }

    # -- the link's side ---------------------------------------------------------

    def attach(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def link_up(self) -> None:
        """The link is (again) connected and in push mode: hold every wanted topic,
        resuming from the last pushed horizon those that were held."""
        upstream = self.upstream
        assert upstream is not None
        held = tuple(t for t in self.wanted if t in self.held_since)
        if held and self.pushed_horizon is not None:
            self.resumes += 1
            upstream.send(
                RetroSubscribe(self.pushed_horizon, held), lambda reply: self._resumed(held, reply)
            )
        elif held:  # held, but nothing ever pushed: no horizon to resume from
            self._lose(held, "no horizon to resume the upstream link from")
            self._hold(held)
        fresh = tuple(t for t in self.wanted if t not in self.held_since)
        if fresh:
            self._hold(fresh)
        self.sync()

    def pushed(self, entries: Sequence[tuple[Topics, bytes]], horizon: int) -> None:
        """A push from upstream (or the answer to ``sync``): publish its messages
        locally, stamped on arrival; its horizon is where the link stands."""
        if entries:
            self.messages_in += len(entries)
            now = self.clock()
            self.router.publish_many(UPSTREAM, entries, lambda: now)
        self.pushed_horizon = horizon  # once they are delivered: the link resumes from it

    def sync(self) -> None:
        """Ask upstream for ``get messages horizon``: what a push would bring, and a
        horizon past every subscribe sent so far (the link resumes from it). Also
        keeps the link from the upstream node's idle timeout."""
        upstream = self.upstream
        if upstream is not None and upstream.connected:
            upstream.send(Get((b"messages", b"horizon")), self._synced)

    def _synced(self, reply: Reply | ServerError) -> None:
        if isinstance(reply, Values) and b"horizon" in reply.values:
            block = reply.values.get(b"messages", b"")
            try:
                entries = parse_publish_block(block) if block else ()
                horizon = parse_horizon(reply.values[b"horizon"])
            except ClientError as error:  # not what a Kraken node answers: moves nothing
                log.error("upstream answered get messages horizon with %r", error)
                return
            self.pushed(entries, horizon)

    def expire(self, now: int) -> None:
        """Stop holding the topics whose linger is over (the link calls it now and then)."""
        if not self.lingering:
            return
        over = tuple(t for t, since in self.lingering.items() if now - since >= self.linger)
        if not over:
            return
        for topic in over:
            del self.lingering[topic]
            self.wanted.discard(topic)
            self.held_since.pop(topic, None)
            self.holds.pop(topic, None)
        upstream = self.upstream
        if upstream is not None and upstream.connected:
            upstream.send(Unsubscribe(over), self._checked)

    # -- interest events of the local router ---------------------------------------

    def interest_gained(self, topics: Topics) -> None:
        new = []
        for topic in topics:
            if self.lingering.pop(topic, None) is None and topic not in self.wanted:
                self.wanted.add(topic)
                new.append(topic)
        if new:
            self._hold(tuple(new))

    def interest_lost(self, topics: Topics) -> None:
        now = self.clock()
        for topic in topics:
            if topic in self.wanted:
                self.lingering[topic] = now

    # -- requests ----------------------------------------------------------------

    def subscribe(self, queue: ClientQueue, topics: Topics, now: int) -> bool:
        horizon = queue.horizon
        if horizon is not None and topics:
            queue.horizon = None
            return self.retro_subscribe(queue, horizon, topics, now)
        return super().subscribe(queue, topics, now)

    def retro_subscribe(self, queue: ClientQueue, horizon: int, topics: Topics, now: int) -> bool:
        held_since = self.held_since
        if all(t in held_since and held_since[t] <= horizon for t in topics):
            return super().retro_subscribe(queue, horizon, topics, now)
        # some of the topics were not held upstream all along since the horizon: what
        # was published upstream meanwhile never came here. The router's own NOT_FOUND
        # (a horizon before its start): subscribed, counted, nothing queued
        return self.router.retro_subscribe(queue, self.router.started - 1, topics, now)

    def publish(  # type: ignore[override]  # an answer later: the upstream node's
        self, queue: ClientQueue, entries: Sequence[Entry], clock: Callable[[], int]
    ) -> int | Pending[int]:
        upstream = self.upstream
        if upstream is None or not upstream.connected:
            failed: Pending[int] = Pending()
            failed.fail(ServerError(UNREACHABLE))
            return failed
        stamp = super().publish(queue, entries, clock)
        done: Pending[int] = Pending()
        chunks = _chunks(entries, self.max_request_bytes)
        left = len(chunks)

        def stored(reply: Reply | ServerError) -> None:
            nonlocal left
            if done.done:
                return  # failed already
            if isinstance(reply, Stored):
                left -= 1
                if not left:
                    done.resolve(stamp)
            elif isinstance(reply, ServerError):
                done.fail(reply)
            else:
                done.fail(ServerError(f"upstream refused the publish: {describe_reply(reply)}"))

        self.messages_out += len(entries)
        for chunk in chunks:  # a run of publishes may be larger than one request may be
            upstream.send(Publish(chunk), stored)
        # a horizon past the publish: a resume from it does not replay these messages
        # (the upstream leaves them out only for the connection that published them)
        self.sync()
        return done

    # -- helpers -----------------------------------------------------------------

    def _hold(self, topics: Topics) -> None:
        """Subscribe upstream; held from the horizon at which the reply arrives."""
        upstream = self.upstream
        if upstream is None or not upstream.connected:
            return  # link_up holds them
        self._holds_sent += 1
        number = self._holds_sent
        for topic in topics:
            self.holds[topic] = number

        def held(reply: Reply | ServerError) -> None:
            if isinstance(reply, Stored):
                since = self.router.horizon(self.clock())
                for topic in topics:
                    if (
                        self.holds.get(topic) == number  # no unsubscribe sent since
                        and topic in self.wanted
                        and topic not in self.held_since
                    ):
                        self.held_since[topic] = since
            elif isinstance(reply, ErrorLine):
                self._refused(topics, reply)
            # a ServerError: the link dropped, and link_up holds them again

        upstream.send(Subscribe(topics), held)
        self.sync()  # the horizon to resume from moves past the subscribe

    def _resumed(self, topics: Topics, reply: Reply | ServerError) -> None:
        if isinstance(reply, ErrorLine):
            self._refused(topics, reply)
        elif isinstance(reply, Stored):
            log.info("upstream link resumed %d topic(s), nothing lost", len(topics))
        elif isinstance(reply, NotFound):
            self._lose(topics, "the upstream node no longer has the messages the link missed")
            since = self.router.horizon(self.clock())
            for topic in topics:
                if topic in self.wanted:
                    self.held_since[topic] = since  # subscribed all the same
        else:
            self._checked(reply)

    def _refused(self, topics: Topics, reply: ErrorLine) -> None:
        """The upstream refused to hold ``topics`` (its max_subscriptions_per_client,
        which bounds a whole proxy): their local clients would silently get nothing
        from upstream, so they are closed, saying why, and the topics let go."""
        why = f"upstream refused the subscription: {describe_reply(reply)}"
        log.warning("%s (%d topic(s)); closing their clients", why, len(topics))
        for topic in topics:
            self.wanted.discard(topic)
            self.lingering.pop(topic, None)
        self._lose(topics, why, count=False)

    def _lose(self, topics: Topics, why: str, count: bool = True) -> None:
        """The history of ``topics`` has a gap: close their local subscribers, whose
        resume from before now is NOT_FOUND (held_since moves past it)."""
        if count:
            self.states_lost += 1
            log.warning("state lost for %d topic(s): %s; closing their clients", len(topics), why)
        for topic in topics:
            self.held_since.pop(topic, None)
        lost = set(topics)
        for queue in list(self.queues()):
            if not lost.isdisjoint(queue.subscriptions):
                queue.lose(f"state lost: {why}" if count else why)

    @staticmethod
    def _checked(reply: Reply | ServerError) -> None:
        # a ServerError is the link dropping: the link logs it, and link_up holds again
        if not isinstance(reply, Stored | ServerError):
            log.warning("upstream answered %s", describe_reply(reply))
