"""An internal failure while handling one connection's request: that connection
gets SERVER_ERROR and is closed, the failure is logged with its traceback, and
every other connection is served on. The fault is injected into a real server
running in this process (no real request makes the router fail)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from kraken.config import Config
from kraken.server import KrakenServer
from kraken_testing import DEADLINE, Wire


def test_internal_failure_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = KrakenServer(Config(tcp_server_port=0, admin_port=0))
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(DEADLINE)
    publish = server.broker.publish

    def failing_publish(queue, entries, clock):  # type: ignore[no-untyped-def]
        if any(topics == (b"boom",) for topics, _ in entries):
            raise RuntimeError("injected fault")
        return publish(queue, entries, clock)

    server.broker.publish = failing_publish  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR, logger="kraken.session"):
            victim, bystander, publisher = (Wire(server.port) for _ in range(3))
            bystander.subscribe("calm")
            victim.send(b"version\r\n")
            victim.set("publish", b"MESSAGE boom 1\r\nx")
            assert victim.line().startswith(b"VERSION ")
            assert victim.line() == b"SERVER_ERROR internal error\r\n"
            assert victim.closed()
            publisher.publish("calm", b"still served")
            assert bystander.messages() == [(b"calm", b"still served")]
        failure = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert failure and failure[0].exc_info is not None
        assert "injected fault" in str(failure[0].exc_info[1])
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(DEADLINE)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(DEADLINE)
        loop.close()
