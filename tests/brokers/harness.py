"""Brokers under the contract test, each behind a ``Harness``.

A harness builds one broker, gives it time, and waits for its answers: for the
in-memory broker an answer is there at once; for a broker behind a network (the
proxy, Redis) ``answer`` waits until the backend has replied and ``settle``
until every message published so far has reached its local subscribers. A new
broker joins the contract test by adding a harness to ``HARNESSES``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from kraken.brokers.base import Answer, Broker, Pending
from kraken.brokers.local import LocalBroker
from kraken.brokers.upstream import UpstreamBroker
from kraken.routing import Router
from kraken.routing.history import DEFAULT_MAX_BYTES
from kraken.server.upstream import UpstreamLink
from kraken_testing import DEADLINE, Deferring, ServerProcess

T = TypeVar("T")

T0 = 1_800_000_000_000_000  # when every broker here starts, Unix microseconds


class Harness(Protocol):
    broker: Broker
    started: int  # a horizon before this is before the broker's history began
    lossless: bool  # its history outlasts a test run: NOT_FOUND only before ``started``
    # it cannot see every message (a proxy: those published upstream by others), so it
    # may answer NOT_FOUND even where the model knows that nothing was lost
    partial_view: bool
    max_messages: int  # each client queue's limit

    def now(self) -> int: ...

    def advance(self, microseconds: int) -> None: ...

    def answer(self, answer: Answer[T]) -> T:
        """The value of ``answer``, once the broker has given it."""
        ...

    def settle(self) -> None:
        """Wait until every message published so far is in its subscribers' queues."""
        ...

    def close(self) -> None: ...


class LocalHarness:
    """The in-memory broker, with a clock the test moves by hand."""

    def __init__(
        self,
        shards: int = 4,
        capacity: int = 10_000,
        max_messages: int = 1000,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.started = self._now = T0
        self.lossless = capacity >= 10_000 and max_bytes >= DEFAULT_MAX_BYTES
        self.partial_view = False
        self.max_messages = max_messages
        router = Router(
            T0, num_shards=shards, messages_per_shard=capacity, bytes_per_shard=max_bytes
        )
        self.broker: Broker = LocalBroker(router, max_messages, 1 << 30)

    def now(self) -> int:
        return self._now

    def advance(self, microseconds: int) -> None:
        self._now += microseconds

    def answer(self, answer: Answer[T]) -> T:
        assert not isinstance(answer, Pending), "the in-memory broker answers at once"
        return answer

    def settle(self) -> None:
        pass

    def close(self) -> None:
        pass


class DeferredHarness(LocalHarness):
    """The in-memory broker answering every request later, as a networked one would."""

    def __init__(self) -> None:
        super().__init__()
        operations = ("register", "horizon", "subscribe", "retro_subscribe", "unsubscribe")
        self.deferring = Deferring(self.broker, (*operations, "publish", "poll"))
        self.broker = self.deferring  # a Broker by delegation

    def answer(self, answer: Answer[T]) -> T:
        assert isinstance(answer, Pending), "every operation of this broker is deferred"
        assert not answer.done, "a deferred answer waits for its backend"
        self.deferring.settle()
        return answer.result()


class _InLoop:
    """A broker living in an event loop on another thread, called from the test's:
    each call runs in the loop, and returns once it has."""

    def __init__(self, broker: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._broker = broker
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._broker, name)

        def call(*args: Any) -> Any:
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()

            def run() -> None:
                try:
                    done.set_result(method(*args))
                except BaseException as error:  # passed to the caller
                    done.set_exception(error)

            self._loop.call_soon_threadsafe(run)
            return done.result(DEADLINE)

        return call


_node: ServerProcess | None = None


def _shared_node() -> ServerProcess:
    """One upstream node for every proxy harness of the run (stopped at exit)."""
    global _node
    if _node is None:
        _node = ServerProcess()
        atexit.register(_node.stop)
    return _node


class ProxyHarness(LocalHarness):
    """A proxy's broker (``UpstreamBroker``) over a real node (a ``kraken run``), its
    link a real ``UpstreamLink``, in an event loop on a thread. Its history of a
    topic starts when it holds the topic upstream: NOT_FOUND is common."""

    def __init__(self) -> None:
        super().__init__()
        self.lossless = False
        self.partial_view = True
        node = _shared_node()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        router = Router(T0, num_shards=4, messages_per_shard=10_000)
        self.proxy = UpstreamBroker(router, self.max_messages, 1 << 30, 60_000_000, self.now)

        async def start() -> UpstreamLink:
            link = UpstreamLink(self.proxy, "127.0.0.1", node.port)
            link.start()
            return link

        self.link = asyncio.run_coroutine_threadsafe(start(), self.loop).result(DEADLINE)
        deadline = time.monotonic() + DEADLINE
        while not self.link.connected:
            assert time.monotonic() < deadline, "the link did not come up"
            time.sleep(0.001)
        self.broker = _InLoop(self.proxy, self.loop)  # type: ignore[assignment]

    def answer(self, answer: Answer[T]) -> T:
        # every request the broker sent upstream answered first (a topic is held once
        # its subscribe is answered): each step ends in the same state, run after run
        deadline = time.monotonic() + DEADLINE
        while self.link.status()["requests_waiting"] or (
            isinstance(answer, Pending) and not answer.done
        ):
            assert time.monotonic() < deadline, "no answer from upstream"
            time.sleep(0.0002)
        return answer.result() if isinstance(answer, Pending) else answer

    def settle(self) -> None:
        self.answer(None)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.link.stop(), self.loop).result(DEADLINE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)
        self.loop.close()


HARNESSES: dict[str, Callable[[], Any]] = {
    "local": LocalHarness,
    "local_one_shard": lambda: LocalHarness(shards=1),
    # a retro buffer of 3 messages per shard: NOT_FOUND is common
    "local_small_buffer": lambda: LocalHarness(shards=2, capacity=3),
    # a retro buffer of 4,000 charged bytes per shard: a few messages (payloads of up to
    # 2,000 bytes and 256 bytes a topic), evicted for bytes, not count; NOT_FOUND is common
    "local_small_bytes": lambda: LocalHarness(shards=2, max_bytes=4000),
    # queues of 4 messages: slow consumers are common
    "local_small_queues": lambda: LocalHarness(max_messages=4),
    "deferred": DeferredHarness,
    "proxy": ProxyHarness,
}
