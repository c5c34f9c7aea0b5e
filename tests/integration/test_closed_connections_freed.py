"""A closed connection lets go of its memory at once (issue 11, hostile-client run).

A client that sent all but one byte of an 8 MiB data block, then closed (or was
closed by ``request_timeout``), left those 8 MiB alive: the connection, its
transport and its session referred to each other, so only Python's cyclic
garbage collector could free them, and in a server that allocates few objects it
seldom runs. 20 such connections, one after the other, grew the server by 162
MB; two rounds of 64 at once held 561 MB, then 1,081 MB.

The first test watches a real ``kraken run`` from outside (its RSS). The others
run a server in this process with the garbage collector off, and check that no
connection, session, parser or client queue outlives its close: whatever the
way the connection ends, reference counting alone must free it.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kraken.config import Config
from kraken.routing.queue import ClientQueue
from kraken.server import KrakenServer
from kraken.server.tcp import Connection
from kraken.sessions import Session
from kraken.wire import RequestParser
from kraken_testing import DEADLINE, Wire, running_server, wait_until

from .test_memory_limits import rss_mib

BLOCK = 8 << 20  # max_request_bytes on the defaults
HEAD = b"set publish 0 0 %d\r\n" % BLOCK


def partial_block(port: int) -> socket.socket:
    """A connection that has sent all of a publish of BLOCK bytes but its last byte."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.sendall(HEAD + b"y" * (BLOCK - 1))
    return sock


def test_connections_closed_mid_block_one_after_another_do_not_grow_the_server() -> None:
    with running_server() as server:
        pid = server.process.pid
        client = server.wire()

        def settled_rss() -> int:
            # the last close is handled once the server answers a later request
            client.send(b"version\r\n")
            assert client.line().startswith(b"VERSION ")
            return rss_mib(pid)

        partial_block(server.port).close()  # one first: the allocator's own growth
        before = settled_rss()
        for _ in range(20):
            sock = partial_block(server.port)
            time.sleep(0.1)  # the server has read the bytes (the send returned: most of them)
            sock.close()
        grown = settled_rss() - before
        # 8 MiB each if kept: 160 MiB; one block's worth of slack
        assert grown < 16, f"RSS grew by {grown} MiB after 20 closed connections"


class InProcessServer:
    """A KrakenServer in a background thread's event loop."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = KrakenServer(Config(tcp_server_port=0, admin_port=0, **options))
        self.call(self.server.start)

    def call(self, coroutine: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine(), self.loop).result(DEADLINE)

    def close(self) -> None:
        self.call(self.server.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)
        self.loop.close()


def alive(kind: type) -> int:
    """How many objects of ``kind`` the garbage collector tracks: alive, or left in
    unreachable cycles it has not collected."""
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


KINDS = (Connection, Session, RequestParser, ClientQueue)


@pytest.fixture
def no_gc() -> Iterator[InProcessServer]:
    """A server in this process, with the cyclic garbage collector off meanwhile."""
    gc.collect()
    gc.disable()
    server = InProcessServer(request_timeout=0.5)
    try:
        yield server
    finally:
        server.close()
        gc.enable()


def closed_all(server: InProcessServer, counts: dict[type, int]) -> None:
    wait_until(lambda: not server.server.connections, "every connection gone")
    # connection_lost has run for each (it removes them); nothing of them is left
    time.sleep(0.05)
    left = {kind.__name__: alive(kind) - counts[kind] for kind in KINDS}
    assert left == dict.fromkeys(left, 0), f"left after the close, uncollected: {left}"


def test_a_client_closing_in_the_middle_of_a_data_block_leaves_nothing(
    no_gc: InProcessServer,
) -> None:
    counts = {kind: alive(kind) for kind in KINDS}
    for _ in range(3):
        sock = partial_block(no_gc.server.port)
        time.sleep(0.05)
        sock.close()
    closed_all(no_gc, counts)


def test_a_client_closed_by_request_timeout_leaves_nothing(no_gc: InProcessServer) -> None:
    counts = {kind: alive(kind) for kind in KINDS}
    sock = partial_block(no_gc.server.port)
    sock.settimeout(DEADLINE)
    reply = b""
    while chunk := sock.recv(4096):
        reply += chunk
    assert reply.startswith(b"CLIENT_ERROR incomplete request: waited 0.5 s for 1 more byte")
    sock.close()
    closed_all(no_gc, counts)


def test_a_client_with_messages_queued_and_one_closed_for_bad_framing_leave_nothing(
    no_gc: InProcessServer,
) -> None:
    counts = {kind: alive(kind) for kind in KINDS}
    port = no_gc.server.port
    subscriber, publisher, bad = Wire(port), Wire(port), Wire(port)
    subscriber.subscribe("t")
    publisher.publish("t", b"queued, never polled")
    subscriber.close()
    publisher.close()
    bad.send(b"set publish 0 0 3\r\nabcXY")  # no \r\n after the block: closed
    assert bad.line().startswith(b"CLIENT_ERROR bad data chunk")
    assert bad.closed()
    bad.close()
    closed_all(no_gc, counts)


def test_memory_freed_by_connections_closed_mid_block_goes_back_to_the_system() -> None:
    # malloc kept the 256 KiB pieces of the blocks in its heap once it had freed a
    # few (its mmap threshold rises): two rounds ended at 211 MiB, not 42
    n = 48
    with running_server("--request-timeout", "1") as server:
        pid = server.process.pid
        client = server.wire()
        start = rss_mib(pid)
        after = []
        for _ in range(2):
            socks = [partial_block(server.port) for _ in range(n)]
            held = rss_mib(pid)
            assert held > start + n * 8 * 0.8, "the blocks were not received"
            for sock in socks:  # each closed by request_timeout
                assert sock.recv(100).startswith(b"CLIENT_ERROR incomplete request")
                sock.close()
            client.send(b"version\r\n")
            assert client.line().startswith(b"VERSION ")
            time.sleep(0.5)  # the closes are handled (each client saw its own)
            after.append(rss_mib(pid))
        assert max(after) < start + 24, f"RSS {start} MiB at start, after each round: {after}"
