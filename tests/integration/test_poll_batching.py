"""Lone polls answered at the end of the event loop's turn (``batch_polls_above``).

Over TCP the turn a read lands in is up to the kernel, so these tests drive the
server's own connections in process, inside one callback (one turn of a real
loop), with transports that record what is written.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from kraken.config import Config
from kraken.server import KrakenServer
from kraken.server.tcp import Connection
from kraken.sessions import Session

POLL = b"get messages\r\n"


class Recorder:
    """The transport side of a connection: keeps every write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 1) if name == "peername" else None

    def close(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0  # every write is taken at once


def run_in_one_turn(batch_polls_above: int, steps) -> list[list[bytes]]:  # type: ignore[no-untyped-def]
    """Open three connections, run ``steps(a, b, c)`` in one callback, let the loop turn."""

    async def main() -> list[list[bytes]]:
        server = KrakenServer(Config(batch_polls_above=batch_polls_above))
        recorders = [Recorder() for _ in range(3)]
        connections = []
        for recorder in recorders:
            connection = Connection(server)
            connection.connection_made(recorder)  # type: ignore[arg-type]
            connections.append(connection)
        connections[0].data_received(b"set subscribe 0 0 1\r\nx\r\n")
        done = asyncio.get_running_loop().create_future()

        def turn() -> None:
            steps(*connections)
            asyncio.get_running_loop().call_soon(done.set_result, None)

        asyncio.get_running_loop().call_soon(turn)
        await done
        return [r.writes for r in recorders]

    return asyncio.run(main())


def publish(connection: Connection, payload: bytes) -> None:
    block = b"MESSAGE x %d\r\n%b" % (len(payload), payload)
    connection.data_received(b"set publish 0 0 %d\r\n%b\r\n" % (len(block), block))


@pytest.mark.parametrize(
    ("batch_polls_above", "answer"),
    [
        # batched: the poll waits for the turn's other reads and carries the message
        (0, b"VALUE messages 0 22\r\nMESSAGE x 9\r\nsame turn\r\nEND\r\n"),
        # at a low read rate (no sweep has measured more yet): answered at once
        (10_000, b"END\r\n"),
    ],
)
def test_a_lone_poll_and_a_publish_later_in_the_same_turn(batch_polls_above, answer):
    def steps(a: Connection, b: Connection, c: Connection) -> None:
        a.data_received(POLL)
        publish(b, b"same turn")

    a, b, _ = run_in_one_turn(batch_polls_above, steps)
    assert a == [b"STORED\r\n", answer]
    assert b == [b"STORED\r\n"]


def test_replies_keep_request_order_when_a_request_follows_a_batched_poll():
    def steps(a: Connection, b: Connection, c: Connection) -> None:
        publish(b, b"before")
        a.data_received(POLL)
        a.data_received(POLL)  # back to back: the first poll takes everything
        a.data_received(b"version\r\n")
        c.data_received(POLL)

    a, _, c = run_in_one_turn(0, steps)
    assert a[1] == b"VALUE messages 0 19\r\nMESSAGE x 6\r\nbefore\r\nEND\r\nEND\r\n"
    assert a[2].startswith(b"VERSION ")
    assert len(a) == 3
    assert c == [b"END\r\n"]


def test_the_sweep_turns_batching_on_above_the_read_rate_and_off_below_it(monkeypatch):
    async def main(batch_polls_above: int, bursts: list[int]) -> list[bool]:
        loop = asyncio.get_running_loop()
        clock = [loop.time()]
        monkeypatch.setattr(loop, "time", lambda: clock[0])
        server = KrakenServer(Config(batch_polls_above=batch_polls_above))
        server.tick, server._reads_then = clock[0], (clock[0], 0)  # as start() sets them
        connection = Connection(server)
        connection.connection_made(Recorder())  # type: ignore[arg-type]
        seen = [server.batch_polls]
        for reads in bursts:  # so many reads, then a sweep one second later
            for _ in range(reads):
                connection.data_received(b"version\r\n")
            clock[0] += 1.0
            server._sweep()
            seen.append(server.batch_polls)
        assert server.reads == sum(bursts)
        assert server._sweeper is not None
        server._sweeper.cancel()
        return seen

    assert asyncio.run(main(100, [101, 100, 150, 0])) == [False, True, False, True, False]
    assert asyncio.run(main(0, [0, 5])) == [True, True, True]  # 0: always


def test_a_failure_while_answering_a_batched_poll_closes_that_connection_alone(monkeypatch):
    poll = Session.poll

    def failing_poll(session: Session[bytes], now: int) -> bytes:
        if session.id == 1:
            raise RuntimeError("injected fault")
        return poll(session, now)

    monkeypatch.setattr(Session, "poll", failing_poll)

    def steps(a: Connection, b: Connection, c: Connection) -> None:
        a.data_received(POLL)
        c.data_received(POLL)

    a, _, c = run_in_one_turn(0, steps)
    assert a == [b"STORED\r\n", b"SERVER_ERROR internal error\r\n"]
    assert c == [b"END\r\n"]


def test_a_poll_line_inside_a_data_block_is_data():
    """The fast path only takes a read that is a whole poll between requests."""

    def steps(a: Connection, b: Connection, c: Connection) -> None:
        for data in (b"set subscribe 0 0 14\r\n", POLL, b"\r\n"):
            c.data_received(data)

    for batch_polls_above in (0, 10_000):
        _, _, c = run_in_one_turn(batch_polls_above, steps)
        assert c == [b"CLIENT_ERROR bad topic\r\n"]


def test_a_connection_that_goes_away_with_a_batched_poll_gets_no_answer_and_harms_none():
    def steps(a: Connection, b: Connection, c: Connection) -> None:
        a.data_received(POLL)
        c.data_received(POLL)
        a.connection_lost(None)  # before the end of the turn
        publish(b, b"after")

    a, _, c = run_in_one_turn(0, steps)
    assert a == [b"STORED\r\n"]  # its subscribe's reply only
    assert c == [b"END\r\n"]  # c subscribed to nothing


def test_at_debug_level_a_lone_poll_takes_the_same_path_and_is_logged(caplog):
    """What runs at debug level is what runs at info level: the batched fast path."""

    def steps(a: Connection, b: Connection, c: Connection) -> None:
        a.data_received(POLL)
        publish(b, b"same turn")

    with caplog.at_level(logging.DEBUG, logger="kraken.server"):
        a, _, _ = run_in_one_turn(0, steps)
    assert a[1] == b"VALUE messages 0 22\r\nMESSAGE x 9\r\nsame turn\r\nEND\r\n"
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "client 1: get messages" in logged
