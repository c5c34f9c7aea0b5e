"""A bug inside the request parser, as a client sees it (issue 11, defect 4).

The fault is injected into the parser of a real server running in this process: a
``set subscribe`` naming ``boom`` makes the topic parser raise. The requests the
client pipelined before it in the same read are carried out and answered (the
publish is delivered), then the connection gets ``SERVER_ERROR`` and is closed;
other connections are served on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest

import kraken.wire.parser as parser_module
from kraken.config import Config
from kraken.server import KrakenServer
from kraken_testing import DEADLINE, Wire


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[KrakenServer]:
    parse_topics = parser_module.parse_topics

    def failing_topics(data: bytes, unique: bool = False) -> tuple[bytes, ...]:
        if data == b"boom":
            raise RuntimeError("injected fault")
        return parse_topics(data, unique)

    monkeypatch.setattr(parser_module, "parse_topics", failing_topics)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = KrakenServer(Config(tcp_server_port=0, admin_port=0))
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(DEADLINE)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(DEADLINE)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(DEADLINE)
        loop.close()


def pipelined_then_boom(server: KrakenServer) -> Wire:
    """A connection that sent, in one write: version, a publish, the failing
    subscribe, and a version that nobody will answer."""
    entry = b"MESSAGE calm 9\r\ndelivered"
    publish = b"set publish 0 0 %d\r\n%b\r\n" % (len(entry), entry)
    boom = b"set subscribe 0 0 4\r\nboom\r\n"
    return Wire(server.port).send(b"version\r\n" + publish + boom + b"version\r\n")


def test_the_requests_before_a_parser_failure_are_carried_out(server: KrakenServer) -> None:
    bystander = Wire(server.port)
    bystander.subscribe("calm")
    victim = pipelined_then_boom(server)
    assert victim.line().startswith(b"VERSION ")
    assert victim.line() == b"STORED\r\n"
    assert victim.line() == b"SERVER_ERROR internal error: request parser failed\r\n"
    assert victim.closed()
    assert victim.buffer == b""  # nothing after the error: the last version is not answered
    assert bystander.messages() == [(b"calm", b"delivered")]
    assert bystander.is_open()


def test_the_server_logs_a_parser_failure_with_its_traceback(
    server: KrakenServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kraken"):
        victim = pipelined_then_boom(server)
        assert victim.closed()
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert failures, [r.getMessage() for r in caplog.records]
    assert "injected fault" in str(failures[0].exc_info[1])  # type: ignore[index]
