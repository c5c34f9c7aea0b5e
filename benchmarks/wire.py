"""The load generator's connections: raw asyncio Protocols speaking the wire bytes.

Rule 1: lean in the timed window. A connection there only frames replies (a
length check, never a parse of the messages), keeps the bytes and a timestamp
per chunk or reply, and sends what was encoded before the window began.
Rule 2: every byte is kept, and parsed and checked after the window
(``parse_kraken_block``, ``parse_redis_pushes``); nothing is trusted unread.

Kraken is spoken as in docs/protocol.md (``set``/``get``), Redis as RESP2 by hand
(``SUBSCRIBE``/``PUBLISH``/``PING``). Nothing here imports ``kraken``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from itertools import accumulate
from time import perf_counter

END = b"END\r\n"
STORED = b"STORED\r\n"
GET_MESSAGES = b"get messages\r\n"
VALUE_MESSAGES = b"VALUE messages 0 "
DRAIN_TOKEN = b"kraken-bench-drain"
REDIS_PUSH = b"*3\r\n$7\r\nmessage\r\n"


# -- encoding --------------------------------------------------------------------


def kraken_set(command: bytes, block: bytes) -> bytes:
    return b"set %s 0 0 %d\r\n%s\r\n" % (command, len(block), block)


def kraken_entry(topics: Sequence[bytes], payload: bytes) -> bytes:
    return b"MESSAGE %s %d\r\n%s" % (b" ".join(topics), len(payload), payload)


def kraken_publish(messages: Sequence[tuple[Sequence[bytes], bytes]]) -> bytes:
    return kraken_set(b"publish", b"\r\n".join(kraken_entry(t, p) for t, p in messages))


def kraken_messages_reply(entries: Sequence[bytes]) -> bytes:
    """The exact answer to ``get messages`` holding these encoded entries."""
    if not entries:
        return END
    block = b"\r\n".join(entries)
    return b"%s%d\r\n%s\r\n%s" % (VALUE_MESSAGES, len(block), block, END)


def resp(*args: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def redis_confirmations(kind: bytes, channels: Sequence[bytes], first_count: int) -> bytes:
    """The replies to ``SUBSCRIBE``/``UNSUBSCRIBE`` of distinct ``channels``.

    ``first_count`` is the subscription count after the first channel.
    """
    step = 1 if kind == b"subscribe" else -1
    return b"".join(
        b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n:%d\r\n"
        % (len(kind), kind, len(channel), channel, first_count + step * i)
        for i, channel in enumerate(channels)
    )


DRAIN_PING = resp(b"PING", DRAIN_TOKEN)
DRAIN_PONG = b"*2\r\n$4\r\npong\r\n$%d\r\n%s\r\n" % (len(DRAIN_TOKEN), DRAIN_TOKEN)


# -- parsing, after the window ---------------------------------------------------


def parse_kraken_block(block: bytes) -> list[tuple[tuple[bytes, ...], bytes]]:
    """The entries ``(topics, payload)`` of a ``VALUE messages`` data block; ValueError if bad."""
    pieces = block.split(b"\r\n")
    if len(pieces) % 2 == 0:
        out = []
        for i in range(0, len(pieces), 2):
            header = pieces[i].split(b" ")
            payload = pieces[i + 1]
            if header[0] != b"MESSAGE" or len(header) < 3 or int(header[-1]) != len(payload):
                break  # a payload holding CRLF, or a bad block: the strict path decides
            out.append((tuple(header[1:-1]), payload))
        else:
            return out
    return _parse_kraken_block_strict(block)


def _parse_kraken_block_strict(block: bytes) -> list[tuple[tuple[bytes, ...], bytes]]:
    out = []
    pos = 0
    size = len(block)
    while pos < size:
        eol = block.find(b"\r\n", pos)
        if eol < 0:
            raise ValueError(f"entry header without CRLF at byte {pos}")
        header = block[pos:eol].split(b" ")
        if header[0] != b"MESSAGE" or len(header) < 3:
            raise ValueError(f"bad entry header {block[pos:eol][:60]!r}")
        start = eol + 2
        end = start + int(header[-1])
        if end > size or (end < size and block[end : end + 2] != b"\r\n"):
            raise ValueError(f"entry length does not match at byte {pos}")
        out.append((tuple(header[1:-1]), block[start:end]))
        pos = end + 2
    return out


def split_kraken_reply(reply: bytes) -> bytes:
    """The data block of a complete non-empty ``get messages`` reply."""
    eol = reply.index(b"\r\n")
    if not reply.startswith(VALUE_MESSAGES) or not reply.endswith(b"\r\n" + END):
        raise ValueError(f"bad poll reply {reply[:60]!r}")
    block = reply[eol + 2 : -7]
    if len(block) != int(reply[len(VALUE_MESSAGES) : eol]):
        raise ValueError("poll reply length does not match its header")
    return block


def parse_redis_pushes(data: bytes) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """The pushes ``(channel, payload)`` in ``data``, and the offset where each ends.

    ``data`` holds nothing but ``message`` pushes; ValueError otherwise.
    """
    pieces = data.split(REDIS_PUSH)
    if pieces[0]:
        raise ValueError(f"unexpected bytes before a push: {pieces[0][:60]!r}")
    out = []
    for piece in pieces[1:]:
        fields = piece.split(b"\r\n")
        if (
            len(fields) != 5
            or fields[4]
            or fields[0] != b"$%d" % len(fields[1])
            or fields[2] != b"$%d" % len(fields[3])
        ):
            raise ValueError(f"bad push {piece[:60]!r}")
        out.append((fields[1], fields[3]))
    prefix = len(REDIS_PUSH)
    ends = list(accumulate(prefix + len(piece) for piece in pieces[1:]))
    return out, ends


# -- connections -----------------------------------------------------------------


class Shared:
    """What the connections of one run share: errors, and the drain at its end.

    Draining: once the publishers are done, each subscriber makes sure it holds
    everything (a Kraken poll sent after ``drain_after``; a Redis ``PING`` answered
    after every push) and reports in; ``drained`` resolves when all have.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.closing = False
        self.drain_after = 0.0
        self._pending = 0
        self.drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def error(self, text: str) -> None:
        self.errors.append(text)

    def drain(self, subscribers: Sequence[KrakenPoller | RedisSubscriber]) -> None:
        self.drain_after = perf_counter()
        self._pending = len(subscribers)
        if not subscribers:
            self.drained.set_result(None)
        for subscriber in subscribers:
            subscriber.drain()

    def drained_one(self) -> None:
        self._pending -= 1
        if self._pending == 0 and not self.drained.done():
            self.drained.set_result(None)


class Conn(asyncio.Protocol):
    """A connection with a setup mode: ``call`` sends and awaits an exact reply."""

    def __init__(self, shared: Shared, label: str) -> None:
        self.shared = shared
        self.label = label
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.lost = False
        self.closing = False
        self._waiter: asyncio.Future[bytes] | None = None
        self._complete: Callable[[bytes], bool] = bool
        self._setup = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not (self.closing or self.shared.closing):
            self.shared.error(f"{self.label}: connection closed by the server ({exc})")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"{self.label}: connection closed"))
        self.on_lost()

    def on_lost(self) -> None:
        """What the run must not wait for any more once the connection is gone."""

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.on_data(data)
            return
        self._setup += data
        if self._complete(self._setup):
            waiter, self._waiter = self._waiter, None
            reply, self._setup = self._setup, b""
            waiter.set_result(reply)

    def on_data(self, data: bytes) -> None:
        self.shared.error(f"{self.label}: unexpected bytes {data[:60]!r}")

    async def call_until(self, request: bytes, complete: Callable[[bytes], bool]) -> bytes:
        self._waiter = self.loop.create_future()
        self._complete = complete
        self.transport.write(request)
        return await self._waiter

    async def call(self, request: bytes, expected: bytes) -> None:
        """Send ``request``; the reply must be exactly ``expected``."""
        reply = await self.call_until(request, lambda got: len(got) >= len(expected))
        if reply != expected:
            raise AssertionError(f"{self.label}: expected {expected[:80]!r}, got {reply[:80]!r}")

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class KrakenPoller(Conn):
    """A Kraken subscriber polling ``get messages``.

    Either every ``period`` seconds, or (``period`` 0) again at once after a
    non-empty reply and after ``sleep`` seconds after an empty one. Non-empty
    replies are kept whole with the time they completed.
    """

    def __init__(self, shared: Shared, label: str, sleep: float = 0.0, period: float = 0.0) -> None:
        super().__init__(shared, label)
        self.sleep = sleep
        self.period = period
        self.replies: list[tuple[float, list[bytes]]] = []
        self.rtts: list[float] = []  # round trips of the polls made while running
        self.polls = 0
        self.running = False
        self.draining = False
        self._parts: list[bytes] | None = None
        self._have = 0
        self._need = 0
        self._sent_at = 0.0
        self._in_flight = False
        self._handle: asyncio.TimerHandle | None = None

    def start(self, delay: float = 0.0) -> None:
        self.running = True
        if delay > 0:
            self._handle = self.loop.call_later(delay, self.poll)
        else:
            self.poll()

    def stop(self) -> None:
        self.running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def drain(self) -> None:
        self.stop()
        self.draining = True
        if self.lost:
            self.on_lost()
        elif not self._in_flight:
            self.poll()

    def on_lost(self) -> None:
        self.stop()
        if self.draining:
            self.draining = False
            self.shared.drained_one()

    def poll(self) -> None:
        self._handle = None
        if self.lost:
            self.on_lost()
            return
        self._in_flight = True
        self.polls += 1
        self._sent_at = perf_counter()
        self.transport.write(GET_MESSAGES)

    def on_data(self, data: bytes) -> None:
        parts = self._parts
        if parts is None:
            if data == END:
                self._reply(None)
                return
            parts = self._parts = [data]
            have = len(data)
        else:
            parts.append(data)
            have = self._have + len(data)
        need = self._need
        if not need:
            head = parts[0] if len(parts) == 1 else b"".join(parts)
            eol = head.find(b"\r\n")
            if eol < 0:
                self._have = have
                return
            if head == END:
                self._parts = None
                self._have = 0
                self._reply(None)
                return
            if not head.startswith(VALUE_MESSAGES):
                self.shared.error(f"{self.label}: bad poll reply {head[:60]!r}")
                self.stop()
                self._in_flight = False
                self._parts = None
                if self.draining:
                    self.draining = False
                    self.shared.drained_one()
                return
            need = eol + 2 + int(head[len(VALUE_MESSAGES) : eol]) + 7
        if have < need:
            self._have = have
            self._need = need
            return
        self._parts = None
        self._have = self._need = 0
        if have != need:
            self.shared.error(f"{self.label}: {have - need} bytes after a poll reply")
        self._reply(parts)

    def _reply(self, parts: list[bytes] | None) -> None:
        now = perf_counter()
        self._in_flight = False
        if parts is not None:
            self.replies.append((now, parts))
        if self.draining:
            if self._sent_at >= self.shared.drain_after:
                self.draining = False
                self.shared.drained_one()
            else:
                self.poll()
            return
        if not self.running:
            return
        self.rtts.append(now - self._sent_at)
        if self.period:
            self._handle = self.loop.call_later(self._sent_at + self.period - now, self.poll)
        elif parts is not None or not self.sleep:
            self.poll()
        else:
            self._handle = self.loop.call_later(self.sleep, self.poll)

    def entries(self) -> list[tuple[float, list[tuple[tuple[bytes, ...], bytes]]]]:
        """Every reply parsed: (time it completed, its entries)."""
        return [
            (t, parse_kraken_block(split_kraken_reply(b"".join(parts))))
            for t, parts in self.replies
        ]


class KrakenPusher(Conn):
    """A Kraken subscriber in push mode (``set push``): reads nothing but what comes.

    Each push (``VALUE push``, ``VALUE horizon``, ``END``) is kept whole with the time
    it completed. Drained by a ``version``: its reply comes after every push of the
    messages acknowledged before it was sent.
    """

    def __init__(self, shared: Shared, label: str) -> None:
        super().__init__(shared, label)
        self.pushes: list[tuple[float, bytes]] = []  # (time, data block)
        self.draining = False
        self._buffer = b""

    async def push_mode(self) -> None:
        await self.call(b"set push 0 0 0\r\n\r\n", STORED)

    def start(self) -> None:
        """Pushes need no start: they come once push mode is on."""

    def stop(self) -> None:
        """Nothing to stop."""

    def drain(self) -> None:
        self.draining = True
        if self.lost:
            self.on_lost()
        else:
            self.transport.write(b"version\r\n")

    def on_lost(self) -> None:
        if self.draining:
            self.draining = False
            self.shared.drained_one()

    def on_data(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        pos = 0
        now = perf_counter()
        while True:
            eol = buffer.find(b"\r\n", pos)
            if eol < 0:
                break
            head = buffer[pos:eol]
            if head.startswith(b"VERSION ") and self.draining:
                pos = eol + 2
                self.draining = False
                self.shared.drained_one()
                continue
            if not head.startswith(b"VALUE push 0 "):
                self.shared.error(f"{self.label}: bad push {head[:60]!r}")
                pos = len(buffer)
                break
            block_end = eol + 2 + int(head[13:])
            horizon_eol = buffer.find(b"\r\n", block_end + 2)
            if horizon_eol < 0:
                break
            end = horizon_eol + 2 + int(buffer[block_end + 2 : horizon_eol].split()[-1]) + 7
            if len(buffer) < end:
                break
            self.pushes.append((now, buffer[eol + 2 : block_end]))
            pos = end
        self._buffer = buffer[pos:]

    def entries(self) -> list[tuple[float, list[tuple[tuple[bytes, ...], bytes]]]]:
        """Every push parsed: (time it completed, its entries)."""
        return [(t, parse_kraken_block(block)) for t, block in self.pushes]


class RedisSubscriber(Conn):
    """A Redis connection in subscribe mode: keeps every pushed chunk and its time."""

    def __init__(self, shared: Shared, label: str) -> None:
        super().__init__(shared, label)
        self.chunks: list[bytes] = []
        self.times: list[float] = []
        self.draining = False
        self._tail = b""

    def on_data(self, data: bytes) -> None:
        self.chunks.append(data)
        self.times.append(perf_counter())
        if self.draining:
            tail = self._tail + data
            if tail.endswith(DRAIN_PONG):
                self.draining = False
                self.shared.drained_one()
            else:
                self._tail = tail[-len(DRAIN_PONG) :]

    def drain(self) -> None:
        self.draining = True
        if self.lost:
            self.on_lost()
        else:
            self.transport.write(DRAIN_PING)

    def on_lost(self) -> None:
        if self.draining:
            self.draining = False
            self.shared.drained_one()

    def pushes(self) -> list[tuple[float, bytes, bytes]]:
        """Every push as (time its last byte arrived, channel, payload), the drain's pong cut."""
        data = b"".join(self.chunks)
        if not data.endswith(DRAIN_PONG):
            raise ValueError("the stream does not end with the drain's pong")
        pushes, ends = parse_redis_pushes(data[: -len(DRAIN_PONG)])
        chunk_ends = list(accumulate(len(c) for c in self.chunks))
        out = []
        k = 0
        times = self.times
        for (channel, payload), end in zip(pushes, ends, strict=True):
            while chunk_ends[k] < end:
                k += 1
            out.append((times[k], channel, payload))
        return out


class Requester(Conn):
    """Closed loop: one request at a time, the next when the reply's bytes are in.

    ``requests[i % n]`` is sent as the i-th request and must be answered by exactly
    ``replies[i % n]``; only lengths are counted in the window, bytes compared after.
    Stops after ``limit`` requests or at ``deadline`` (perf_counter time).
    """

    def __init__(
        self,
        shared: Shared,
        label: str,
        requests: Sequence[bytes],
        replies: Sequence[bytes],
        on_done: Callable[[Requester], None],
    ) -> None:
        super().__init__(shared, label)
        self.requests = requests
        self.replies = replies
        self.on_done = on_done
        self.limit = 0
        self.deadline = 0.0
        self.sent = 0
        self.sent_times: list[float] = []
        self.latencies: list[float] = []
        self.chunks: list[bytes] = []
        self.finished = False
        self._want = 0
        self._got = 0

    def start(self, deadline: float, limit: int) -> None:
        self.deadline = deadline
        self.limit = limit
        self._next()

    def on_lost(self) -> None:
        if not self.finished:
            self.finished = True
            self.on_done(self)

    def _next(self) -> None:
        i = self.sent
        if self.lost:
            self.on_lost()
            return
        if i >= self.limit or perf_counter() >= self.deadline:
            self.finished = True
            self.on_done(self)
            return
        k = i % len(self.requests)
        self._want += len(self.replies[k])
        self.sent = i + 1
        now = perf_counter()
        self.sent_times.append(now)
        self.transport.write(self.requests[k])

    def on_data(self, data: bytes) -> None:
        self.chunks.append(data)
        self._got += len(data)
        if self._got >= self._want and not self.finished:
            self.latencies.append(perf_counter() - self.sent_times[-1])
            self._next()

    def verify(self) -> str | None:
        """None when every reply was exactly the expected one, else what differs."""
        got = b"".join(self.chunks)
        n = len(self.replies)
        expected = b"".join(self.replies[i % n] for i in range(self.sent))
        if got == expected:
            return None
        at = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
            min(len(got), len(expected)),
        )
        return (
            f"{self.label}: reply bytes differ at byte {at}: expected "
            f"{expected[at : at + 60]!r}, got {got[at : at + 60]!r}"
        )


class Sink(Conn):
    """A publisher's connection in an open loop: counts reply bytes, keeps them."""

    def __init__(self, shared: Shared, label: str) -> None:
        super().__init__(shared, label)
        self.chunks: list[bytes] = []
        self.got = 0
        self.want = 0
        self._waiter_all: asyncio.Future[None] | None = None

    def on_data(self, data: bytes) -> None:
        self.chunks.append(data)
        self.got += len(data)
        waiter = self._waiter_all
        if waiter is not None and self.got >= self.want and not waiter.done():
            waiter.set_result(None)

    def on_lost(self) -> None:
        if self._waiter_all is not None and not self._waiter_all.done():
            self._waiter_all.set_result(None)

    async def all_replies(self, want: int) -> None:
        self.want = want
        if self.got >= want or self.lost:
            return
        self._waiter_all = self.loop.create_future()
        await self._waiter_all


async def connect(
    factory: Callable[[], Conn], count: int, port: int, at_once: int = 200
) -> list[Conn]:
    """``count`` connections to 127.0.0.1:``port``, ``at_once`` in flight."""
    loop = asyncio.get_running_loop()
    out: list[Conn] = []
    for start in range(0, count, at_once):
        batch = await asyncio.gather(
            *(
                loop.create_connection(factory, "127.0.0.1", port)
                for _ in range(min(at_once, count - start))
            )
        )
        out.extend(protocol for _, protocol in batch)
    return out
