"""Limits of the contract, each on a server started with a small value of it:
max_tcp_clients, slow consumers, idle clients, the retro buffer, line and
request sizes; plus the fan-out warnings and a clean shutdown."""

from __future__ import annotations

import signal
import socket
import time

from kraken_testing import DEADLINE, Wire, running_server, wait_until


def test_connection_past_max_tcp_clients_is_refused_with_server_error():
    with running_server("--max-tcp-clients", "3") as server:
        # the start-up probe's connection may still be closing: retry until 3 fit
        clients: list[Wire] = []

        def three_fit() -> bool:
            for c in clients:
                c.close()
            clients[:] = [server.wire() for _ in range(3)]
            return all(c.is_open() for c in clients)

        wait_until(three_fit, "three connections to fit")
        extra = server.wire()
        assert extra.line() == b"SERVER_ERROR Too many clients\r\n"
        assert extra.closed()
        assert all(c.is_open() for c in clients)
        clients[0].close()

        def accepts() -> bool:
            w = server.wire()
            try:
                return w.is_open()
            finally:
                w.close()

        wait_until(accepts, "a freed slot")


def test_queue_may_hold_exactly_max_queued_messages_and_one_more_is_a_slow_consumer():
    with running_server("--max-queued-messages", "5") as server:
        slow, fast, publisher = server.wire(), server.wire(), server.wire()
        slow.subscribe("sc")
        fast.subscribe("sc")
        for i in range(5):
            publisher.publish("sc", b"%d" % i)
        assert len(fast.messages()) == 5
        publisher.publish("sc", b"5")  # the sixth message: slow's queue overflows
        assert slow.line() == b"SERVER_ERROR slow consumer\r\n"
        assert slow.closed()
        assert fast.messages() == [(b"sc", b"5")]
        assert publisher.is_open()
    assert "slow consumer" in server.output()


def test_queue_past_max_queued_bytes_is_a_slow_consumer():
    with running_server("--max-queued-bytes", "10") as server:
        slow, publisher = server.wire(), server.wire()
        slow.subscribe("sb")
        publisher.publish("sb", b"x" * 6)
        publisher.publish("sb", b"y" * 4)  # exactly 10 payload bytes: still fine
        assert slow.messages() == [(b"sb", b"x" * 6), (b"sb", b"y" * 4)]
        publisher.publish("sb", b"z" * 10)
        publisher.publish("sb", b"!")
        assert slow.line() == b"SERVER_ERROR slow consumer\r\n"
        assert slow.closed()


def test_slow_consumer_from_its_own_retro_subscribe_gets_earlier_replies_first():
    with running_server("--max-queued-messages", "2") as server:
        a, b = server.wire(), server.wire()
        horizon = b.horizon()
        for i in range(3):
            b.publish("own", b"%d" % i)
        a.send(b"version\r\n")
        a.set("retro_subscribe", horizon + b"\r\nown")
        assert a.line().startswith(b"VERSION ")
        assert a.line() == b"SERVER_ERROR slow consumer\r\n"
        assert a.closed()


def test_idle_connection_is_closed_and_an_active_one_is_kept():
    with running_server("--client-idle-timeout", "1") as server:
        idle, active = server.wire(), server.wire()
        idle.subscribe("idle")
        quiet_since = time.monotonic()

        def idle_closed_while_active_talks() -> bool:
            assert active.is_open()
            return idle.closed(timeout=0.2)

        wait_until(idle_closed_while_active_talks, "the idle connection to be closed")
        assert time.monotonic() - quiet_since >= 1.0  # not before its time
        server.wire().publish("idle", b"nobody left")
        assert active.is_open()


def test_a_client_that_talks_more_often_than_the_idle_timeout_is_never_closed():
    with running_server("--client-idle-timeout", "1") as server:
        wire = server.wire()
        until = time.monotonic() + 3.5
        while time.monotonic() < until:  # 0.85 s of silence each time, under the 1 s limit
            assert wire.is_open()
            assert not wire.closed(timeout=0.85)
        assert wire.is_open()


def test_retro_buffer_not_found_only_for_topics_that_lost_messages():
    options = ("--num-router-shards", "1", "--messages-stored-per-router-shard", "5")
    with running_server(*options) as server:
        a, b, c, d = server.wire(), server.wire(), server.wire(), server.wire()
        horizon = b.horizon()
        for i in range(6):
            b.publish("busy", b"%d" % i)  # one more than the buffer holds
        b.publish("quiet", b"q")
        a.set("retro_subscribe", horizon + b"\r\nbusy").expect(b"NOT_FOUND\r\n")
        assert a.messages() == []
        c.set("retro_subscribe", horizon + b"\r\nquiet").expect(b"STORED\r\n")
        assert c.messages() == [(b"quiet", b"q")]
        b.publish("busy", b"live")
        assert a.messages() == [(b"busy", b"live")]  # NOT_FOUND still subscribed
        # a buffer exactly full loses nothing
        horizon = b.horizon()
        for i in range(5):
            b.publish("full", b"%d" % i)
        d.set("retro_subscribe", horizon + b"\r\nfull").expect(b"STORED\r\n")
        assert [p for _, p in d.messages()] == [b"0", b"1", b"2", b"3", b"4"]


def test_register_then_subscribe_is_not_found_when_the_buffer_moved_past_it():
    options = ("--num-router-shards", "1", "--messages-stored-per-router-shard", "2")
    with running_server(*options) as server:
        a, b = server.wire(), server.wire()
        a.register()
        for i in range(3):
            b.publish("reg", b"%d" % i)
        a.set("subscribe", b"reg").expect(b"NOT_FOUND\r\n")
        assert a.messages() == []


def test_max_line_bytes_and_max_request_bytes_options():
    with running_server("--max-line-bytes", "100", "--max-request-bytes", "50") as server:
        ok = server.wire()
        ok.request(b"get " + b"k" * 96 + b"\r\n", b"END\r\n")
        ok.set("subscribe", b"t" * 50).expect(b"STORED\r\n")
        long_line = server.wire()
        long_line.send(b"get " + b"k" * 97 + b"\r\n")
        assert long_line.line() == b"CLIENT_ERROR request line longer than 100 bytes\r\n"
        assert long_line.closed()
        big = server.wire()
        big.send(b"set subscribe 0 0 51\r\n")
        assert big.line() == b"CLIENT_ERROR data block of 51 bytes exceeds 50 bytes\r\n"
        assert big.closed()
        assert ok.is_open()


def test_large_fan_out_and_many_topics_are_logged_as_warnings():
    options = ("--router-min-fanout-to-warn", "2", "--router-min-publish-to-topics-to-warn", "3")
    with running_server(*options) as server:
        a, b, p = server.wire(), server.wire(), server.wire()
        a.subscribe("fan")
        b.subscribe("fan")
        p.publish("fan", b"x")
        p.publish("t1 t2 t3", b"y")
    log = server.output()
    assert "WARNING kraken.router: large fan-out: a message to 1 topics reached 2" in log
    assert "published to 3 topics" in log


def test_sigterm_shuts_down_cleanly_and_the_log_says_where_it_listened():
    with running_server() as server:
        client = server.wire()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(DEADLINE) == 0
        assert client.closed()
    log = server.output()
    assert f"listening on 127.0.0.1:{server.port}" in log
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server.port)) != 0
