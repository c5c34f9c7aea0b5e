"""No silent gap: the clients resume through network cuts, a cut mid-poll, a
slow-consumer close and a server restart, and report state lost when they must."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from kraken.client import Client, ConnectionLost, Message, StateLost
from kraken_testing import DEADLINE, running_server

from .proxy import Proxy


@pytest.fixture
def server():
    with running_server() as process:
        yield process


@pytest.fixture
def proxy(server):
    p = Proxy(server.port)
    yield p
    p.close()


def payloads(messages) -> list[bytes]:
    return [m.payload for m in messages]


def test_network_cut_between_publishes_loses_nothing(server, proxy):
    lost: list[StateLost] = []
    with (
        Client(proxy.address, on_state_lost=lost.append) as listener,
        Client(f"127.0.0.1:{server.port}") as publisher,
    ):
        listener.subscribe(["cut", "other"])
        publisher.publish("cut", "1")
        assert payloads(listener.receive_messages()) == [b"1"]
        proxy.cut()
        publisher.publish("cut", "2")
        publisher.publish(["other", "cut"], "3")
        assert listener.receive_messages() == [
            Message((b"cut",), b"2"),
            Message((b"other", b"cut"), b"3"),
        ]
        assert lost == []


def test_cut_mid_poll_replays_what_the_server_already_handed_out(server, proxy):
    lost: list[StateLost] = []
    with (
        Client(proxy.address, on_state_lost=lost.append) as listener,
        Client(f"127.0.0.1:{server.port}") as publisher,
    ):
        listener.subscribe("midpoll")
        listener.receive_messages()
        publisher.publish_many([("midpoll", "a"), ("midpoll", "b")])
        proxy.cut_on(b"get messages horizon")
        assert payloads(listener.receive_messages()) == [b"a", b"b"]
        assert proxy.swallowed == 1 and lost == []
        publisher.publish("midpoll", "c")
        assert payloads(listener.receive_messages()) == [b"c"]


def test_unreachable_then_back_raises_connection_lost_then_resumes(server, proxy):
    with (
        Client(proxy.address, reconnect_timeout=0.3, timeout=1) as listener,
        Client(f"127.0.0.1:{server.port}") as publisher,
    ):
        listener.subscribe("down")
        listener.receive_messages()
        proxy.refusing = True
        proxy.cut()
        publisher.publish("down", "while down")
        with pytest.raises(ConnectionLost):
            listener.receive_messages()
        proxy.refusing = False
        assert payloads(listener.receive_messages()) == [b"while down"]


def test_server_restart_reports_state_lost_then_carries_on():
    lost: list[StateLost] = []
    with running_server() as first:
        port = first.port
        listener = Client(f"127.0.0.1:{port}", on_state_lost=lost.append)
        listener.subscribe(["r1", "r2"])
        with Client(f"127.0.0.1:{port}") as publisher:
            publisher.publish("r1", "before")
        assert payloads(listener.receive_messages()) == [b"before"]
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    with running_server(port=port) as second:
        assert listener.receive_messages() == []
        assert [(e.server, e.topics) for e in lost] == [
            (f"127.0.0.1:{port}", frozenset({b"r1", b"r2"}))
        ]
        with Client(f"127.0.0.1:{second.port}") as publisher:
            publisher.publish("r2", "after")
        assert payloads(listener.receive_messages()) == [b"after"]
    listener.close()


def test_slow_consumer_close_reports_state_lost_and_resubscribes():
    lost: list[StateLost] = []
    with running_server("--max-queued-messages", "3") as server:
        address = f"127.0.0.1:{server.port}"
        with Client(address, on_state_lost=lost.append) as listener, Client(address) as pub:
            listener.subscribe("slow")
            listener.receive_messages()
            pub.publish_many([("slow", str(i)) for i in range(4)])  # one past the limit
            assert listener.receive_messages() == []
            assert len(lost) == 1 and lost[0].topics == frozenset({b"slow"})
            pub.publish("slow", "after")
            assert payloads(listener.receive_messages()) == [b"after"]


def test_listener_through_a_network_cut_and_a_restart_never_has_a_silent_gap():
    """The issue's scenario: a listener runs while the network is cut and the server
    restarts; every message is received, except across the restart, which is reported."""
    lost: list[StateLost] = []
    received: list[bytes] = []
    with running_server() as first:
        port = first.port
        proxy = Proxy(port)
        listener = Client(proxy.address, on_state_lost=lost.append, reconnect_timeout=1)
        listener.subscribe("seq")
        stop = threading.Event()

        def listen() -> None:
            for message in listener.listen(poll_interval=0.01):
                received.append(message.payload)
                if stop.is_set() and message.payload == b"end":
                    return

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        with Client(f"127.0.0.1:{port}") as publisher:
            for i in range(100):
                publisher.publish("seq", b"a%d" % i)
                if i in (30, 60):
                    proxy.cut()
        wait_for(lambda: len(received) >= 100)
        assert received == [b"a%d" % i for i in range(100)]  # cuts lost nothing
        assert lost == []
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    with running_server(port=port):
        wait_for(lambda: len(lost) == 1)  # the restart is reported, not silent
        stop.set()
        with Client(f"127.0.0.1:{port}") as publisher:
            publisher.publish("seq", "end")
        thread.join(DEADLINE)
        assert received[-1] == b"end"
    proxy.close()
    listener.close()


def wait_for(condition) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_register_survives_a_connection_lost_before_the_subscribe(server, proxy):
    lost: list[StateLost] = []
    with (
        Client(proxy.address, on_state_lost=lost.append) as listener,
        Client(f"127.0.0.1:{server.port}") as publisher,
    ):
        listener.register()
        publisher.publish("reg-cut", "between register and subscribe")
        proxy.cut()
        listener.subscribe("reg-cut")
        assert payloads(listener.receive_messages()) == [b"between register and subscribe"]
        assert lost == []


def test_register_then_poll_then_subscribe_then_cut_loses_nothing(server, proxy):
    with Client(proxy.address) as listener, Client(f"127.0.0.1:{server.port}") as publisher:
        listener.register()
        publisher.publish("late-topic", "published after the register")
        listener.receive_messages()  # the poll's horizon is past that message
        listener.subscribe("late-topic")  # replays it from the register's horizon
        proxy.cut()
        assert payloads(listener.receive_messages()) == [b"published after the register"]
