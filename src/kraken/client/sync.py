"""The blocking client: plain sockets driving the shared client logic."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType

from kraken.client.core import (
    Backoff,
    Broken,
    ClientLogic,
    Link,
    Message,
    OnLinkEvent,
    OnStateLost,
    Payload,
    Plan,
    T,
    TopicNames,
)
from kraken.errors import ConnectionLost
from kraken.wire.replies import Reply


class Client(ClientLogic):
    """A blocking Kraken client that never loses a message silently.

    ``servers`` is one ``"host:port"`` or a list of them; topics are then sharded
    across the servers by rendezvous hashing. A call made while a server is
    unreachable retries with capped exponential backoff and jitter for up to
    ``reconnect_timeout`` seconds, then raises ``ConnectionLost``; the next call
    reconnects and resumes every subscription from the last poll's horizon.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "127.0.0.1:12355",
        *,
        on_state_lost: OnStateLost | None = None,
        timeout: float = 5.0,
        reconnect_timeout: float = 10.0,
        on_link_event: OnLinkEvent | None = None,
    ) -> None:
        super().__init__(servers, on_state_lost, timeout, reconnect_timeout, on_link_event)

    def register(self) -> None:
        """Make the next ``subscribe`` retroactive to now."""
        self._run(self._register())

    def subscribe(self, topics: TopicNames) -> None:
        """Subscribe; RegistrationTooOld if a pending ``register`` cannot be honoured."""
        self._run(self._subscribe(topics))

    def retro_subscribe(self, horizon: bytes | str | float, topics: TopicNames) -> None:
        """Subscribe and queue what was published since ``horizon``; RegistrationTooOld
        (the subscription holds) when the server no longer has all of it."""
        self._run(self._retro_subscribe(horizon, topics))

    def unsubscribe(self, topics: TopicNames) -> None:
        self._run(self._unsubscribe(topics))

    def publish(self, topics: TopicNames, payload: Payload) -> None:
        self._run(self._publish_many([(topics, payload)]))

    def publish_many(self, messages: Iterable[tuple[TopicNames, Payload]]) -> None:
        """Publish several messages in one request per server."""
        self._run(self._publish_many(messages))

    def receive_messages(self) -> list[Message]:
        """Every message queued for this client, in publish order per server.

        Raises StateLost first (when no ``on_state_lost`` callback is set) if a
        resumed connection found messages lost for good; the next call goes on.
        """
        return self._run(self._receive_messages())

    def horizon(self) -> bytes:
        """The horizon of the last poll (of the first server)."""
        return self._run(self._horizon())

    def version(self) -> str:
        return self._run(self._version())

    def listen(self, poll_interval: float = 1.0) -> Iterator[Message]:
        """Yield messages as they arrive, polling every ``poll_interval`` s when idle.

        Rides out lost connections; raises StateLost when messages were lost for
        good and no ``on_state_lost`` callback is set.
        """
        while True:
            try:
                messages = self.receive_messages()
            except ConnectionLost:
                time.sleep(poll_interval)
                continue
            yield from messages
            if not messages:
                time.sleep(poll_interval)

    def close(self) -> None:
        for link in self._links.values():
            _drop(link)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- I/O -----------------------------------------------------------------------

    def _run(self, plan: Plan[T]) -> T:
        try:
            exchange = next(plan)
            while True:
                exchange = plan.send(self._call(*exchange))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _call(self, link: Link, data: bytes, count: int) -> list[Reply]:
        """Connect if needed, send, read ``count`` replies; retry within the bounded wait."""
        deadline = time.monotonic() + self.reconnect_timeout
        backoff = Backoff()
        while True:
            try:
                if link.connection is None:
                    self._connect(link)
                return self._exchange(link, data, count)
            except (Broken, OSError) as error:
                _drop(link)
                now = time.monotonic()
                self._broken(link, error, deadline, now)
                time.sleep(min(backoff.next(), deadline - now))

    def _connect(self, link: Link) -> None:
        sock = socket.create_connection(link.address, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.connection = sock
        data, count = self._resume_plan(link)
        self._resumed(link, self._exchange(link, data, count))

    def _exchange(self, link: Link, data: bytes, count: int) -> list[Reply]:
        if link.closed is not None:
            raise link.closed
        sock: socket.socket = link.connection
        replies: list[Reply] = []
        if data:
            sock.sendall(data)
        while len(replies) < count:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise Broken("the server closed the connection")
            self._replies(link, chunk, replies, count)
        return replies


def _drop(link: Link) -> None:
    if link.connection is not None:
        link.connection.close()
        link.connection = None
