"""The history file: the retro buffers and the horizon clock across a planned restart.

With ``history_file`` set, a graceful stop writes the broker's history (its retro
buffers, their eviction records, its clock and its start: ``LocalBroker.history()``)
and the next start reads it back (``LocalBroker.restore_history``), so that a client
that registered before the restart resumes without loss instead of getting NOT_FOUND.

Never a silent gap: what a crash loses must answer NOT_FOUND, so a file may only be
read if it holds everything up to the moment its server stopped serving.

- Only a graceful stop writes it, once no client is connected, atomically: a
  temporary file, fsync, rename over the file, fsync of the directory.
- A start that uses the file marks its run with ``<file>.running`` first, then
  deletes the file: a file is read by one run at most. The graceful stop removes
  the mark once the new file is written.
- A start that finds a mark left by a process that is gone (SIGKILL, a crash, a
  power cut, a failed write) knows the last run did not stop gracefully: it deletes
  any history file (one older than that run), starts without history and logs why;
  every horizon from before answers NOT_FOUND. A mark of a process still alive on
  this host is waited for (``kraken stop`` returns when the admin API is gone, while
  the server may still be writing), up to ``OWNER_WAIT`` seconds; if it is still
  running, another server uses the file, and this one runs without it.
- A file that does not parse (truncated, corrupt, another format or version) or
  that was written with another ``num_router_shards`` is logged, renamed to
  ``<file>.rejected`` and the server starts fresh: NOT_FOUND, not a crash.

The format (version 1) is binary, big-endian, and read without executing anything::

    magic b"KRAKENHF", version u16
    header: u32 length, then JSON: format, version, written_at (Unix seconds),
            writer, pid, num_router_shards, started, last, gaps, messages (count)
    per shard: floor u64, records u32, then each (stamp u64, topic u16+bytes)
    per message, oldest first: stamp u64, topics u32 x (u16+bytes),
            payload u32+bytes, shards u32 x u32 (the shards that hold it)
    crc32 u32 of every byte before it

Its size is bounded by the retro buffers' limits: each message is written once, its
payload and topics as they are, plus 24 bytes and 6 per topic and per shard.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import IO, Any, Protocol, runtime_checkable

import kraken
from kraken.brokers import Broker, LocalBroker
from kraken.config import Config, ConfigError
from kraken.routing import HistorySnapshot
from kraken.server.hub import now_us

log = logging.getLogger("kraken.server")

MAGIC = b"KRAKENHF"
VERSION = 1
FORMAT = "kraken history"
OWNER_WAIT = 15.0  # seconds a start waits for a live previous server to finish writing
MAX_HEADER = 1 << 20

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@runtime_checkable
class KeepsHistory(Protocol):
    """A broker whose history survives a planned restart (``LocalBroker``). Optional:
    brokers behind a network (a proxy, Redis) keep theirs elsewhere."""

    def history(self) -> HistorySnapshot: ...

    def restore_history(self, snapshot: HistorySnapshot, now: int) -> None: ...


class Rejected(Exception):
    """The file is not a history this server can use; the message says why."""


# -- the format ----------------------------------------------------------------------


class _Writer:
    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.crc = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.crc = zlib.crc32(data, self.crc)

    def sized(self, length: struct.Struct, data: bytes) -> None:
        self.write(length.pack(len(data)))
        self.write(data)


def write_history(file: IO[bytes], snapshot: HistorySnapshot, written_at: float) -> None:
    """Write ``snapshot`` in the format above."""
    out = _Writer(file)
    out.write(MAGIC + _U16.pack(VERSION))
    header = {
        "format": FORMAT,
        "version": VERSION,
        "written_at": written_at,
        "writer": f"kraken {kraken.__version__}",
        "pid": os.getpid(),
        "num_router_shards": len(snapshot.evictions),
        "started": snapshot.started,
        "last": snapshot.last,
        "gaps": [list(gap) for gap in snapshot.gaps],
        "messages": len(snapshot.messages),
    }
    out.sized(_U32, json.dumps(header).encode())
    for records, floor in snapshot.evictions:
        out.write(_U64.pack(floor) + _U32.pack(len(records)))
        for topic, stamp in records:
            out.write(_U64.pack(stamp))
            out.sized(_U16, topic)
    for stamp, topics, payload, shards in snapshot.messages:
        out.write(_U64.pack(stamp) + _U32.pack(len(topics)))
        for topic in topics:
            out.sized(_U16, topic)
        out.sized(_U32, payload)
        out.write(_U32.pack(len(shards)) + b"".join(_U32.pack(i) for i in shards))
    file.write(_U32.pack(out.crc))


class _Reader:
    """Reads exactly what is asked, never past the file's end: a corrupt length cannot
    make it allocate more than the file holds."""

    def __init__(self, file: IO[bytes], size: int) -> None:
        self.file = file
        self.left = size
        self.crc = 0

    def take(self, n: int) -> bytes:
        if n > self.left:
            raise Rejected("it is truncated (or a length in it is corrupt)")
        data = self.file.read(n)
        if len(data) != n:
            raise Rejected("it is truncated")
        self.left -= n
        self.crc = zlib.crc32(data, self.crc)
        return data

    def number(self, kind: struct.Struct) -> int:
        value: int = kind.unpack(self.take(kind.size))[0]
        return value

    def sized(self, length: struct.Struct) -> bytes:
        return self.take(self.number(length))

    def count(self, smallest: int) -> int:
        """A u32 count of items of at least ``smallest`` bytes each, checked against the
        bytes left."""
        n = self.number(_U32)
        if n * smallest > self.left:
            raise Rejected("it is truncated (or a count in it is corrupt)")
        return n


def read_history(file: IO[bytes], size: int) -> tuple[HistorySnapshot, dict[str, Any]]:
    """The snapshot in ``file`` (``size`` bytes) and its header; ``Rejected`` unless it
    is a whole, intact file of this format."""
    data = _Reader(file, size)
    if size < len(MAGIC) + 2 or data.take(len(MAGIC)) != MAGIC:
        raise Rejected("it is not a Kraken history file")
    version = data.number(_U16)
    if version != VERSION:
        raise Rejected(f"it is of format version {version}; this server reads {VERSION}")
    length = data.number(_U32)
    if length > MAX_HEADER:
        raise Rejected("its header is corrupt")
    try:
        header = json.loads(data.take(length))
        shards = header["num_router_shards"]
        started, last, count = header["started"], header["last"], header["messages"]
        gaps = tuple((a, b) for a, b in header["gaps"])
        numbers = (shards, started, last, count, *(n for gap in gaps for n in gap))
        if header["format"] != FORMAT or not all(type(n) is int and n >= 0 for n in numbers):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise Rejected("its header is corrupt") from None
    evictions = []
    for _ in range(shards):
        floor = data.number(_U64)
        records = [(data.number(_U64), data.sized(_U16)) for _ in range(data.count(10))]
        evictions.append(([(topic, stamp) for stamp, topic in records], floor))
    messages = []
    for _ in range(count):
        stamp = data.number(_U64)
        topics = tuple(data.sized(_U16) for _ in range(data.count(2)))
        payload = data.sized(_U32)
        held = tuple(data.number(_U32) for _ in range(data.count(4)))
        messages.append((stamp, topics, payload, held))
    crc = data.crc
    if data.left != 4 or data.number(_U32) != crc:
        raise Rejected("its checksum does not match (corrupt, or cut short)")
    return HistorySnapshot(started, last, gaps, messages, evictions), header


# -- the file's life -----------------------------------------------------------------


def _fsync_directory(path: str) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs directories
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> None:
    temporary = f"{path}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path)


def _alive(pid: int) -> bool:
    """True when process ``pid`` runs on this host and may be a Kraken server."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return b"kraken" in file.read()
    except OSError:
        return True  # no /proc (or not readable): take it as alive


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return repr(seconds)


class HistoryFile:
    """The history file of one server: read at start, written at a graceful stop."""

    def __init__(self, path: str, num_router_shards: int) -> None:
        self.path = path
        self.mark = f"{path}.running"
        self.num_router_shards = num_router_shards
        self.owned = False  # this run holds the mark, and writes the file when it stops
        self._written = ""  # when the file read was written, for the log

    def start(self, broker: KeepsHistory, now: Callable[[], int] = now_us) -> None:
        """Restore the history of the last graceful stop into ``broker``, if there is one
        this run may use, and mark the run. ConfigError when the file cannot be used at
        all (its directory missing or not writable): better not to start than to lose
        the history at the next stop."""
        previous = self._previous_run()
        if previous == "in use":
            return
        found = os.path.exists(self.path)
        snapshot = None
        if previous == "crashed":
            self._discard(self.path)
        elif found:
            snapshot = self._read()
            if snapshot is not None:
                try:
                    broker.restore_history(snapshot, now())
                except ValueError as error:
                    self._reject(str(error))
                    snapshot = None
        try:
            _write_atomically(self.mark, self._write_mark)
        except OSError as error:
            raise ConfigError(
                f"cannot use history_file {self.path}: cannot write {self.mark}: "
                f"{error.strerror or error}"
            ) from None
        self.owned = True
        if snapshot is not None:
            self._restored(snapshot)
            try:
                os.unlink(self.path)  # read once: the mark keeps a crash from re-reading it
                _fsync_directory(self.path)
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("history file %s read but not deleted: %s", self.path, error)
        elif previous is None and not found:
            log.info("history file %s: none yet; it is written at a graceful stop", self.path)

    def _previous_run(self) -> str | None:
        """None when the last run with this file stopped gracefully (or there was none),
        "crashed" when it did not, "in use" when a live server holds the file."""
        deadline = time.monotonic() + OWNER_WAIT
        waited = False
        while True:
            try:
                with open(self.mark, "rb") as file:
                    mark = json.loads(file.read(64 * 1024))
                pid, host = int(mark["pid"]), str(mark["host"])
            except FileNotFoundError:
                if waited:
                    log.info("the server before finished writing history file %s", self.path)
                return None
            except (OSError, ValueError, KeyError, TypeError):
                pid, host = 0, ""  # unreadable: as good as a crash's
            this_host = host == socket.gethostname()
            running = this_host and pid != os.getpid() and _alive(pid)
            if pid and not this_host:
                running = True  # cannot tell whether it runs: leave its file alone
            if running and time.monotonic() < deadline:
                if not waited:
                    log.info(
                        "history file %s: waiting up to %.0f s for kraken pid %d, which "
                        "holds it, to finish stopping",
                        self.path,
                        OWNER_WAIT,
                        pid,
                    )
                    waited = True
                time.sleep(0.05)
                continue
            if running:
                log.error(
                    "history file %s is held by kraken pid %d on %s (%s exists): running "
                    "without it, so no history is kept across this server's restart; give "
                    "each server its own history_file",
                    self.path,
                    pid,
                    host,
                    self.mark,
                )
                return "in use"
            log.warning(
                "history file %s: the last server with it (pid %d) did not stop gracefully "
                "(%s is left), so any history file is older than what it published: starting "
                "without history; horizons from before now answer NOT_FOUND",
                self.path,
                pid,
                self.mark,
            )
            return "crashed"

    def _write_mark(self, file: IO[bytes]) -> None:
        mark = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}
        file.write(json.dumps(mark).encode() + b"\n")

    def _read(self) -> HistorySnapshot | None:
        try:
            with open(self.path, "rb") as file:
                snapshot, header = read_history(file, os.fstat(file.fileno()).st_size)
        except Rejected as error:
            self._reject(str(error))
            return None
        except OSError as error:
            self._reject(f"it cannot be read: {error.strerror or error}")
            return None
        shards = header["num_router_shards"]
        if shards != self.num_router_shards:
            self._reject(
                f"it was written with num_router_shards {shards}, and this server has "
                f"{self.num_router_shards}"
            )
            return None
        written_at = header.get("written_at")
        self._written = ""
        if isinstance(written_at, int | float):
            ago = time.time() - written_at
            self._written = f", written at {_when(written_at)} ({ago:.1f} s ago)"
        return snapshot

    def _restored(self, snapshot: HistorySnapshot) -> None:
        log.info(
            "history restored from %s%s: %d message(s); horizons from %s on resume",
            self.path,
            self._written,
            len(snapshot.messages),
            f"{snapshot.started // 1_000_000}.{snapshot.started % 1_000_000:06d}",
        )
        if snapshot.last > now_us():
            log.warning(
                "history file %s holds horizons ahead of this host's clock: horizons go on "
                "from its last one, never backwards",
                self.path,
            )

    def _reject(self, why: str) -> None:
        rejected = f"{self.path}.rejected"
        log.error(
            "history file %s not used: %s. Starting without history (horizons from before "
            "now answer NOT_FOUND); the file is kept as %s",
            self.path,
            why,
            rejected,
        )
        try:
            os.replace(self.path, rejected)
        except OSError as error:
            log.error("cannot rename %s to %s: %s", self.path, rejected, error)
            self._discard(self.path)

    def _discard(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as error:
            log.error("cannot delete the stale history file %s: %s", path, error)
            return
        log.info("deleted the stale history file %s", path)

    def stop(self, broker: KeepsHistory) -> None:
        """Write the history (a graceful stop: no client is connected any more) and
        remove the run's mark. A failure is logged: the mark stays, and the next start
        answers NOT_FOUND for horizons from before it."""
        if not self.owned:
            return
        began = time.monotonic()
        snapshot = broker.history()
        try:
            _write_atomically(self.path, lambda file: write_history(file, snapshot, time.time()))
            size = os.path.getsize(self.path)
            os.unlink(self.mark)
            _fsync_directory(self.mark)
        except (OSError, ValueError, struct.error) as error:
            why = error.strerror if isinstance(error, OSError) and error.strerror else error
            log.error(
                "cannot write history file %s: %s; the next start will answer NOT_FOUND "
                "for horizons from before it",
                self.path,
                why,
            )
            return
        self.owned = False
        log.info(
            "history written to %s: %d message(s), %d bytes, in %.3f s",
            self.path,
            len(snapshot.messages),
            size,
            time.monotonic() - began,
        )


@contextlib.contextmanager
def history_kept(config: Config, broker: Broker | None = None) -> Iterator[Broker | None]:
    """The broker to serve with, its history restored from ``config.history_file``
    (a new ``LocalBroker`` unless one is given), and written back when the block ends.
    Yields ``broker`` as given when ``history_file`` is not set, or when the broker
    keeps no history (a warning says so)."""
    if not config.history_file:
        yield broker
        return
    if broker is None:
        broker = LocalBroker.from_config(config, now_us())
    if not isinstance(broker, KeepsHistory):
        log.warning(
            "history_file %s is ignored: the %s broker keeps no history across a restart",
            config.history_file,
            type(broker).__name__,
        )
        yield broker
        return
    history = HistoryFile(config.history_file, config.num_router_shards)
    history.start(broker)
    try:
        yield broker
    finally:
        history.stop(broker)
