"""Instructions per operation of Kraken trees, counted by callgrind: an A/B without noise.

    python -m benchmarks.instructions --kraken-src before=/tmp/old/src --kraken-src after=src

For each tree, a child Python (that tree first on PYTHONPATH) builds a server and its
TCP connections in process, with a transport that only counts what is written (no
socket, no event loop), and runs one operation OPS times under ``valgrind --tool=
callgrind``; the same run with no operation is subtracted, so start-up cancels out:

- ``fanout``: one publish of one message to a topic with 50 subscribers, then a lone
  ``get messages`` from each subscriber (the fanout workload's cycle);
- ``empty poll``: a lone ``get messages`` that finds nothing (the idle workload's);
- ``publish``: the publish alone (the subscribers' queues drained directly);
- ``... batched``: the polls answered together at the end of the loop's turn, as
  above ``batch_polls_above`` reads a second (the fanout workload's case).

``PYTHONHASHSEED=0`` makes runs repeatable. The counts are CPU instructions of the whole
interpreter, so they follow the Python code's cost; wall time and system calls are what
``python -m benchmarks`` measures. Needs valgrind (Debian package ``valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SUBSCRIBERS = 50

DRIVER = r"""
import os
from kraken.config import Config
from kraken.server.listener import KrakenServer
try:
    from kraken.server.tcp import Connection
except ImportError:  # trees before the sessions-and-brokers change
    from kraken.server.connection import Connection

class Transport:
    def __init__(self): self.written = 0
    def write(self, data): self.written += len(data)
    def get_extra_info(self, name): return ("127.0.0.1", 1)
    def pause_reading(self): pass
    def resume_reading(self): pass
    def close(self): pass
    def set_write_buffer_limits(self, high, low): pass
    def get_write_buffer_size(self): return 0

server = KrakenServer(Config())
batched = os.environ["OP"].endswith("batched")
server.batch_polls = batched  # batched: answered together, as under load

class Loop:  # the one call of the event loop that batching makes
    def call_soon(self, callback):
        pass

import asyncio
asyncio.get_running_loop = Loop
def connect():
    connection = Connection(server)
    connection.connection_made(Transport())
    return connection
subscribers = [connect() for _ in range(int(os.environ["SUBSCRIBERS"]))]
publisher = connect()
for s in subscribers:
    s.data_received(b"set subscribe 0 0 5\r\ntopic\r\n")
queues = [getattr(s, "queue", None) or s.session.queue for s in subscribers]
PUBLISH = b"set publish 0 0 24\r\nMESSAGE topic 5\r\nhello\r\n"
POLL = b"get messages\r\n"

def fanout():
    publisher.data_received(PUBLISH)
    for s in subscribers:
        s.data_received(POLL)

def empty_poll():
    for s in subscribers:
        s.data_received(POLL)

def publish():
    publisher.data_received(PUBLISH)
    for q in queues:
        q.drain()

def fanout_batched():
    fanout()
    server._answer_polls()  # the end of the loop's turn

def empty_poll_batched():
    empty_poll()
    server._answer_polls()

operation = {
    "fanout": fanout,
    "empty poll": empty_poll,
    "publish": publish,
    "fanout batched": fanout_batched,
    "empty poll batched": empty_poll_batched,
}[os.environ["OP"]]
for _ in range(20):
    operation()  # warm up: caches, specialised bytecode
for _ in range(int(os.environ["OPS"])):
    operation()
"""

# operation -> divisor (per poll, or per cycle)
OPERATIONS = {
    "fanout": 1,
    "empty poll": SUBSCRIBERS,
    "publish": 1,
    "fanout batched": 1,
    "empty poll batched": SUBSCRIBERS,
}


def count(src: Path, operation: str, ops: int, driver: Path) -> int:
    env = dict(
        os.environ,
        PYTHONPATH=str(src),
        PYTHONHASHSEED="0",
        OP=operation,
        OPS=str(ops),
        SUBSCRIBERS=str(SUBSCRIBERS),
    )
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, driver],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in:\n{done.stderr}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--kraken-src",
        action="append",
        metavar="NAME=DIR",
        required=True,
        help="a tree to count (its src directory); repeatable, the first is the baseline",
    )
    parser.add_argument("--ops", type=int, default=100, help="operations counted (default 100)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 2
    trees = [tuple(spec.split("=", 1)) for spec in args.kraken_src]
    with tempfile.TemporaryDirectory() as tmp:
        driver = Path(tmp) / "driver.py"
        driver.write_text(DRIVER)
        results: dict[str, dict[str, float]] = {}
        for name, src in trees:
            results[name] = {}
            for operation, per in OPERATIONS.items():
                base = count(Path(src), operation, 0, driver)
                total = count(Path(src), operation, args.ops, driver)
                results[name][operation] = (total - base) / args.ops / per
    first = trees[0][0]
    print(f"{'operation':<28}" + "".join(f"{name:>14}" for name, _ in trees), end="")
    print("".join(f"{name + '/' + first:>16}" for name, _ in trees[1:]))
    for operation, per in OPERATIONS.items():
        label = f"{operation} (per {'poll' if per > 1 else 'cycle'})"
        counts = "".join(f"{results[n][operation]:>14,.0f}" for n, _ in trees)
        print(f"{label:<28}{counts}", end="")
        base = results[first][operation]
        print("".join(f"{results[n][operation] / base:>15.3f}x" for n, _ in trees[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
