"""What a server's transports share: the broker, the options and the counters.

A transport's connections see the server only through its ``Hub``: they never
import the listener that accepts them (which imports them), and the admin API
reads the same counters. The hub also batches lone polls: above
``batch_polls_above`` reads a second, connections queue their lone polls here
and all are answered at the end of the event loop's turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Protocol

import kraken
from kraken.brokers import Broker, LocalBroker
from kraken.config import Config
from kraken.sessions import (
    AllowAll,
    Authorizer,
    CloseReason,
    MemcachedDialect,
    Session,
    SessionContext,
)


class Client(Protocol):
    """An open connection of any transport, as the sweep and the admin API see it."""

    peer: str  # "host:port"
    connected_at: float  # time.time() when it connected
    last_seen: float  # hub.tick when it last sent something
    closed_at: float  # hub.tick when it was closed
    session: Session[Any] | None

    @property
    def reason(self) -> CloseReason | None: ...

    def close(self, reason: CloseReason) -> None: ...

    def time_out_idle(self, before: float) -> None:
        """Close for the idle timeout: silent since ``before`` (``last_seen`` checked),
        unless reading paused or resumed since then."""
        ...

    def time_out_request(self, before: float) -> None:
        """Close if in the middle of a request, reading, and silent since ``before``."""
        ...

    @property
    def unsent(self) -> int:
        """Bytes written to the client but not yet taken by its socket."""
        ...

    def limit_unsent(self) -> None:
        """Close as a slow consumer if ``unsent`` and the payload bytes queued for the
        client are past ``max_queued_bytes`` together."""
        ...

    def drain(self) -> None:
        """Its turn in a drain: close with ``SERVER_ERROR shutting down`` once nothing
        waits for it (its queue empty, no reply held)."""
        ...

    def abort(self) -> None: ...


class Deferred(Protocol):
    """A connection with lone polls to answer at the end of the loop's turn."""

    def answer_polls(self, now: int) -> None:
        """Answer the lone polls received; ``now`` in Unix microseconds."""
        ...


def now_us() -> int:
    """The wall clock in Unix microseconds: the time every session passes to its broker."""
    return time.time_ns() // 1000


class Hub:
    def __init__(
        self, config: Config, broker: Broker | None = None, authorizer: Authorizer | None = None
    ) -> None:
        self.config = config
        self.broker: Broker = broker or LocalBroker.from_config(config, now_us())
        self.authorizer: Authorizer = authorizer or AllowAll()
        self.connections: set[Client] = set()  # the transports' open connections
        self.tick = 0.0  # loop time of the last sweep: a coarse clock for idleness
        self.draining = False  # a graceful stop began: no new connection is accepted
        self.started = time.time()
        self.accepted = 0  # connections given a session
        self.closes: Counter[CloseReason] = Counter()
        self.errors: Counter[str] = Counter()  # error replies by ProtocolError.kind
        # what every session of the memcached transport shares
        self.sessions = SessionContext(
            self.broker,
            MemcachedDialect(kraken.__version__),
            clock=now_us,
            errors=self.errors,
            authorizer=self.authorizer,
            max_subscriptions=config.max_subscriptions_per_client,
            max_topics_per_message=config.max_topics_per_message,
        )
        self.bytes_received = 0
        self.bytes_sent = 0
        self.reads = 0  # data_received calls, for the read rate
        self.debug = False  # log every request: kraken.server at debug level (see refresh())
        self.refresh()
        # answer lone polls at the end of the loop's turn (updated by each sweep)
        self.batch_polls = config.batch_polls_above == 0
        self._deferred: list[Deferred] = []
        self._delayed: list[Deferred] = []  # pushes waiting for push_delay

    def refresh(self) -> None:
        """Read what may change at run time: the log level (per-request logging)."""
        self.debug = logging.getLogger("kraken.server").isEnabledFor(logging.DEBUG)

    def defer_poll(self, connection: Deferred) -> None:
        """Have ``connection`` answer its polls once this turn's reads are handled."""
        deferred = self._deferred
        deferred.append(connection)
        if len(deferred) == 1:
            asyncio.get_running_loop().call_soon(self._answer_polls)

    def defer_push(self, connection: Deferred) -> None:
        """Have ``connection`` push what is queued for it: at the end of this turn, or
        ``push_delay`` seconds from the first push so deferred, with every push due
        then (one timer for all), so that a push carries what that time queued."""
        delay = self.config.push_delay
        if not delay:
            self.defer_poll(connection)
            return
        delayed = self._delayed
        delayed.append(connection)
        if len(delayed) == 1:
            asyncio.get_running_loop().call_later(delay, self._answer_pushes)

    def _answer_pushes(self) -> None:
        delayed = self._delayed
        self._delayed = []
        now = now_us()
        for connection in delayed:
            connection.answer_polls(now)

    def _answer_polls(self) -> None:
        deferred = self._deferred
        self._deferred = []
        now = now_us()  # one clock read for the turn's polls
        for connection in deferred:
            connection.answer_polls(now)  # a failure closes that connection alone

    def closed(self, reason: CloseReason) -> None:
        self.closes[reason] += 1
