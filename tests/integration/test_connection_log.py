"""Per-connection log lines are debug (issue 11, defect 9, the fourth point).

A bare connect and close cost 207 B of INFO log, about 1 MB/s at 5,000
connections a second. As with Redis (no per-connection line at its default level)
and NATS (only with -D), connects and ordinary disconnects are logged at debug
level; a close that says something went wrong is still logged at info, naming the
peer. Real servers over loopback TCP, their log read as an operator would.
"""

from __future__ import annotations

import re

from kraken_testing import running_server, wait_until


def test_at_info_a_bare_connect_and_close_logs_nothing() -> None:
    with running_server() as server:
        started = len(server.output())
        for _ in range(20):
            wire = server.wire()
            assert wire.is_open()
            wire.close()
        wire = server.wire()
        wire.send(b"quit\r\n")
        assert wire.closed()
        # the server has seen the closes: a connection made after them is answered
        assert server.wire().is_open()
    assert server.output()[started:].count("kraken.server") == 1  # "kraken stopped"


def test_at_debug_connects_and_disconnects_are_logged() -> None:
    with running_server("--log-level", "debug") as server:
        wire = server.wire()
        assert wire.is_open()
        wire.close()

        def logged() -> bool:
            log = server.output()
            return (
                re.search(r"DEBUG kraken.server: client \d+ connected from 127.0.0.1:\d+\n", log)
                is not None
                and re.search(
                    r"DEBUG kraken.server: client \d+ from 127.0.0.1:\d+ disconnected: "
                    r"client closed the connection\n",
                    log,
                )
                is not None
            )

        wait_until(logged, "the connect and the disconnect at debug level")


def test_an_abnormal_close_is_still_logged_at_info_with_its_peer() -> None:
    with running_server("--max-line-bytes", "100") as server:
        wire = server.wire()
        wire.send(b"get " + b"k" * 200 + b"\r\n")
        assert wire.line().startswith(b"CLIENT_ERROR request line longer than 100 bytes")
        assert wire.closed()

        def logged() -> bool:
            pattern = r"INFO kraken.server: client \d+ from [\d.:]+ disconnected: framing error\n"
            return re.search(pattern, server.output()) is not None

        wait_until(logged, "the framing error's disconnect at info level")
        assert "connected from" not in server.output()
