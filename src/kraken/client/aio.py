"""The asyncio client: streams driving the shared client logic."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterable, Sequence
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

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AsyncClient(ClientLogic):
    """The asyncio twin of ``Client``: the same calls, awaited, the same guarantees."""

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

    async def register(self) -> None:
        await self._run(self._register())

    async def subscribe(self, topics: TopicNames) -> None:
        await self._run(self._subscribe(topics))

    async def retro_subscribe(self, horizon: bytes | str | float, topics: TopicNames) -> None:
        await self._run(self._retro_subscribe(horizon, topics))

    async def unsubscribe(self, topics: TopicNames) -> None:
        await self._run(self._unsubscribe(topics))

    async def publish(self, topics: TopicNames, payload: Payload) -> None:
        await self._run(self._publish_many([(topics, payload)]))

    async def publish_many(self, messages: Iterable[tuple[TopicNames, Payload]]) -> None:
        await self._run(self._publish_many(messages))

    async def receive_messages(self) -> list[Message]:
        return await self._run(self._receive_messages())

    async def horizon(self) -> bytes:
        return await self._run(self._horizon())

    async def version(self) -> str:
        return await self._run(self._version())

    async def listen(self, poll_interval: float = 1.0) -> AsyncIterator[Message]:
        while True:
            try:
                messages = await self.receive_messages()
            except ConnectionLost:
                await asyncio.sleep(poll_interval)
                continue
            for message in messages:
                yield message
            if not messages:
                await asyncio.sleep(poll_interval)

    async def close(self) -> None:
        for link in self._links.values():
            _drop(link)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- I/O -----------------------------------------------------------------------

    async def _run(self, plan: Plan[T]) -> T:
        try:
            exchange = next(plan)
            while True:
                exchange = plan.send(await self._call(*exchange))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _call(self, link: Link, data: bytes, count: int) -> list[Reply]:
        deadline = time.monotonic() + self.reconnect_timeout
        backoff = Backoff()
        while True:
            try:
                if link.connection is None:
                    await self._connect(link)
                return await self._exchange(link, data, count)
            except (Broken, OSError, TimeoutError) as error:
                _drop(link)
                now = time.monotonic()
                self._broken(link, error, deadline, now)
                await asyncio.sleep(min(backoff.next(), deadline - now))

    async def _connect(self, link: Link) -> None:
        host, port = link.address
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.connection = (reader, writer)
        data, count = self._resume_plan(link)
        self._resumed(link, await self._exchange(link, data, count))

    async def _exchange(self, link: Link, data: bytes, count: int) -> list[Reply]:
        if link.closed is not None:
            raise link.closed
        reader, writer = link.connection
        replies: list[Reply] = []
        if data:
            writer.write(data)
            await writer.drain()
        while len(replies) < count:
            chunk = await asyncio.wait_for(reader.read(1 << 20), self.timeout)
            if not chunk:
                raise Broken("the server closed the connection")
            self._replies(link, chunk, replies, count)
        return replies


def _drop(link: Link) -> None:
    if link.connection is not None:
        link.connection[1].close()
        link.connection = None
