"""Push mode (``set push``), over real TCP: messages written as they are queued.

A client in push mode never polls: at the end of each turn of the server's event
loop in which messages were queued for it, it is sent one ``VALUE push`` with all
of them and the horizon, as ``get messages horizon`` would answer. The replies to
its requests keep their order; a push is never inside one. A client that never
asks for push mode sees nothing new.
"""

from __future__ import annotations

import socket
import time
from collections import deque

from pymemcache.client.base import Client as Memcache

from kraken.types import Topics
from kraken.wire import parse_publish_block
from kraken.wire.replies import ErrorLine, Reply, ReplyParser, Stored, Values, VersionReply
from kraken_testing import DEADLINE, Wire, running_server


def is_push(reply: Reply) -> bool:
    return isinstance(reply, Values) and b"push" in reply.values


def payloads(block: bytes) -> list[bytes]:
    return [payload for _, payload in parse_publish_block(block)]


class Pushed:
    """A raw connection in push mode that reads replies and pushes in order."""

    def __init__(self, port: int, *topics: str, options: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.parser = ReplyParser()
        self.ready: deque[Reply] = deque()  # read, not yet taken
        block = " ".join(topics).encode()
        subscribe = b"set subscribe 0 0 %d\r\n%b\r\n" % (len(block), block)
        self.sock.sendall(subscribe + b"set push 0 0 %d\r\n%b\r\n" % (len(options), options))
        assert [self.next(), self.next()] == [Stored(), Stored()]

    def next(self) -> Reply:
        """The next reply or push."""
        while not self.ready:
            data = self.sock.recv(1 << 16)
            assert data, "closed"
            self.ready.extend(self.parser.feed(data))
        return self.ready.popleft()

    def push(self) -> tuple[list[tuple[Topics, bytes]], bytes]:
        """The next push's entries and horizon."""
        frame = self.next()
        assert isinstance(frame, Values) and set(frame.values) == {b"push", b"horizon"}, frame
        entries = [
            (tuple(topics), payload)
            for topics, payload in parse_publish_block(frame.values[b"push"])
        ]
        return entries, frame.values[b"horizon"]

    def nothing_within(self, seconds: float) -> bool:
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(DEADLINE)
        self.ready.extend(self.parser.feed(data))
        return False


def publishes(*messages: tuple[str, bytes]) -> bytes:
    out = b""
    for topics, payload in messages:
        entry = b"MESSAGE %s %d\r\n%s" % (topics.encode(), len(payload), payload)
        out += b"set publish 0 0 %d\r\n%s\r\n" % (len(entry), entry)
    return out


def test_messages_are_pushed_as_published_with_their_horizon_one_push_per_turn() -> None:
    with running_server() as server:
        pushed = Pushed(server.port, "a", "b")
        publisher = server.wire()
        publisher.publish("a", b"first")
        entries, horizon = pushed.push()
        assert entries == [((b"a",), b"first")]
        assert float(horizon) > time.time() - 60
        # 100 publishes in one write: one read, one turn, so one push carrying all
        publisher.send(publishes(*[("a b c", b"%d" % i) for i in range(100)]))
        assert [publisher.line() for _ in range(100)] == [b"STORED\r\n"] * 100
        entries, later = pushed.push()
        assert entries == [((b"a", b"b"), b"%d" % i) for i in range(100)]
        assert later > horizon
        assert pushed.nothing_within(0.2)


def test_the_horizon_of_a_push_resumes_a_lost_connection_without_a_gap() -> None:
    with running_server() as server:
        pushed = Pushed(server.port, "t")
        publisher = server.wire()
        publisher.publish("t", b"1")
        _, horizon = pushed.push()
        pushed.sock.close()
        publisher.publish("t", b"2")
        publisher.publish("t", b"3")
        resumed = server.wire()
        resumed.set("retro_subscribe", horizon + b"\r\nt").expect(b"STORED\r\n")
        assert resumed.messages() == [(b"t", b"2"), (b"t", b"3")]


def test_replies_keep_their_order_and_a_push_comes_between_them() -> None:
    with running_server() as server:
        pushed = Pushed(server.port, "t")
        publisher = server.wire()
        publisher.publish("t", b"before")
        pushed.sock.sendall(b"version\r\nget horizon\r\nget messages\r\nversion\r\n")
        seen = [pushed.next() for _ in range(5)]
        # pushed at the end of the publish's turn, before its STORED went out: first
        assert is_push(seen[0]) and not any(map(is_push, seen[1:]))
        assert isinstance(seen[0], Values) and payloads(seen[0].values[b"push"]) == [b"before"]
        version, horizon, polled, version_again = seen[1:]
        assert isinstance(version, VersionReply) and isinstance(version_again, VersionReply)
        assert isinstance(horizon, Values) and set(horizon.values) == {b"horizon"}
        assert polled == Values({})  # the push took it
        publisher.publish("t", b"after")
        assert pushed.push()[0] == [((b"t",), b"after")]


def test_a_client_in_push_mode_that_reads_nothing_is_a_slow_consumer() -> None:
    with running_server("--max-queued-bytes", str(1 << 20)) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"set subscribe 0 0 1\r\nt\r\nset push 0 0 0 noreply\r\n\r\n")
        publisher, bystander = server.wire(), server.wire()
        bystander.subscribe("other")
        payload = b"x" * 50_000
        for _ in range(200):  # 10 MB, ten times the limit
            publisher.publish("t", payload)
        publisher.publish("other", b"hi")
        assert bystander.messages() == [(b"other", b"hi")]  # served all along
        data = b""
        sock.settimeout(DEADLINE)
        deadline = time.monotonic() + 3 * DEADLINE
        while time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        assert data.endswith(b"SERVER_ERROR slow consumer\r\n")
        assert publisher.is_open()


def test_an_old_client_never_sees_a_push() -> None:
    # pymemcache, as the original's clients: no set push, so polls as ever
    with running_server() as server:
        memcache = Memcache(("127.0.0.1", server.port), default_noreply=False)
        assert memcache.set("subscribe", b"t") is True
        pushed = Pushed(server.port, "t")
        publisher = Wire(server.port)
        publisher.publish("t", b"m")
        assert pushed.push()[0] == [((b"t",), b"m")]
        assert memcache.get("messages") == b"MESSAGE t 1\r\nm"
        assert memcache.get("messages") is None
        memcache.close()


def test_with_stamps_each_message_carries_its_horizon() -> None:
    # the stamp of a message is a horizon: retro_subscribe with it replays what came after
    with running_server() as server:
        pushed = Pushed(server.port, "t", options=b"stamps")
        publisher = server.wire()
        publisher.send(publishes(("t", b"1"), ("t", b"2"), ("t", b"3")))
        assert [publisher.line() for _ in range(3)] == [b"STORED\r\n"] * 3
        frame = pushed.next()
        assert isinstance(frame, Values) and list(frame.values) == [b"push", b"stamps", b"horizon"]
        stamps = frame.values[b"stamps"].split(b" ")
        assert (
            len(stamps) == 3 and stamps == sorted(stamps) and stamps[-1] <= frame.values[b"horizon"]
        )
        replay = server.wire()
        replay.set("retro_subscribe", stamps[0] + b"\r\nt").expect(b"STORED\r\n")
        assert replay.messages() == [(b"t", b"2"), (b"t", b"3")]
        # an option this server does not know: refused, the connection kept
        pushed.sock.sendall(b"set push 0 0 6\r\norigin\r\nversion\r\n")
        assert pushed.next() == ErrorLine(
            b"CLIENT_ERROR unknown push option origin (known: stamps)"
        )
        assert isinstance(pushed.next(), VersionReply)


def test_with_push_delay_a_push_carries_what_that_time_queued() -> None:
    # three publishes, each answered before the next, within the delay: one push
    with running_server("--push-delay", "0.3") as server:
        pushed = Pushed(server.port, "t")
        publisher = server.wire()
        for i in range(3):
            publisher.publish("t", b"%d" % i)
        entries, _ = pushed.push()
        assert entries == [((b"t",), b"%d" % i) for i in range(3)]
        assert pushed.nothing_within(0.4)
