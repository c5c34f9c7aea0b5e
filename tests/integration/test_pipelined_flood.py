"""One connection pipelining a flood of requests does not hold up the others
(issue 11, hostile-client run).

10 MB of empty lines (5,000,000 requests, each answered ``ERROR``) on one
connection kept every other client waiting up to 5.4 s: the event loop (libuv)
reads a ready socket up to 32 times in a row, 256 KiB each, and each read's
131,072 requests were all carried out before anything else. Now a connection
gets one batch of requests (``BATCH``) per turn of the loop, and the rest of its
read waits in the parser, its socket paused, for the next turn.

Nothing here times the server: another client's request must be answered while
the flood's replies are still coming, counted in bytes, and every flood request
must be answered, in order, whether the flooder reads as it goes or not.
"""

from __future__ import annotations

import socket
import threading
import time

from kraken.server.tcp import BATCH
from kraken_testing import DEADLINE, running_server

LINES = 1_000_000  # 2 MB of empty lines: a dozen reads of the server's, 1,000 batches
ERROR = b"ERROR\r\n"


class Flooder:
    """A connection that sends ``LINES`` empty lines and a ``version``, in one write
    from a thread, and reads the replies from another (once ``start_reading``)."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(DEADLINE)
        self.received = 0
        self.data = bytearray()
        self.expected = len(ERROR) * LINES + len(b"VERSION 0.1.0\r\n")
        self.sender = threading.Thread(
            target=self.sock.sendall, args=(b"\r\n" * LINES + b"version\r\n",), daemon=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.sender.start()

    def start_reading(self) -> None:
        self.reader.start()

    def _read(self) -> None:
        while self.received < self.expected:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                break
            self.data += chunk
            self.received += len(chunk)

    def finish(self) -> bytes:
        self.reader.join(DEADLINE * 4)
        self.sender.join(DEADLINE)
        self.sock.close()
        return bytes(self.data)


def answered_in_order(replies: bytes) -> bool:
    return replies == ERROR * LINES + b"VERSION 0.1.0\r\n"


FLOOD = 300_000  # noreply publishes: 13 MB, about 50 reads of the server's


def test_a_flood_of_pipelined_publishes_lets_another_client_publish_in_between() -> None:
    # Where another client's publish lands among the flood's, in the order a watcher of
    # the topic receives them, says how much of the flood went first: counted, not timed.
    publish = b"set publish 0 0 14 noreply\r\nMESSAGE f 1\r\nx\r\n"
    with running_server("--max-queued-messages", str(2 * FLOOD)) as server:
        watcher, other = server.wire(), server.wire()
        watcher.subscribe("f")
        flooder = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
        sender = threading.Thread(target=flooder.sendall, args=(publish * FLOOD,), daemon=True)
        sender.start()
        seen: list[bytes] = []
        while not seen:  # the flood is being carried out
            seen += [payload for _, payload in watcher.messages()]
        before = len(seen)  # at least this much of the flood went before the marker
        other.publish("f", b"marker")
        while b"marker" not in seen:
            seen += [payload for _, payload in watcher.messages()]
        went_first = seen.index(b"marker") - before
        # before: the rest of libuv's run of up to 32 reads of 256 KiB (190,000 publishes);
        # now the batches carried out while the marker was on its way
        assert went_first < 20 * BATCH, f"{went_first:,} of the flood's publishes went first"
        deadline = time.monotonic() + 4 * DEADLINE
        while len(seen) < FLOOD + 1 and time.monotonic() < deadline:
            seen += [payload for _, payload in watcher.messages()]
        assert seen.count(b"x") == FLOOD  # nothing of the flood lost
        sender.join(DEADLINE)
        flooder.close()


def test_a_flooder_that_reads_nothing_for_a_while_gets_every_reply_in_order() -> None:
    # the server stops carrying out its requests while its replies are not taken
    # (pause_writing), and goes on from where it stopped once they are
    with running_server() as server:
        flood = Flooder(server.port, rcvbuf=4096)
        time.sleep(1.0)
        other = server.wire()
        other.send(b"version\r\n")
        assert other.line().startswith(b"VERSION ")
        flood.start_reading()
        assert answered_in_order(flood.finish())
        assert flood.received > BATCH * len(ERROR)
