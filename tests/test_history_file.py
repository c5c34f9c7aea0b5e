"""The history file (kraken.server.history_file): its format, and its life from one
graceful stop to the next start. Real servers across restarts: tests/integration/
test_history_restart.py."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from kraken.brokers import LocalBroker
from kraken.config import Config, ConfigError
from kraken.routing import ClientQueue, HistorySnapshot, Router
from kraken.server import history_file
from kraken.server.history_file import (
    HistoryFile,
    Rejected,
    history_kept,
    read_history,
    write_history,
)
from kraken_testing import wait_until

T0 = 1_800_000_000_000_000
SECOND = 1_000_000


def busy_router(num_shards: int = 3, capacity: int = 5) -> Router:
    rng = random.Random(5)
    router = Router(T0, num_shards=num_shards, messages_per_shard=capacity)
    topics = [b"t%d" % i for i in range(8)] + ["caf\u00e9".encode()]
    for i in range(40):
        payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))  # CRLF too
        router.publish(1, tuple(rng.sample(topics, rng.randint(1, 4))), payload, T0 + 1 + i)
    router.horizon(T0 + 100)
    return router


def encoded(snapshot: HistorySnapshot) -> bytes:
    out = io.BytesIO()
    write_history(out, snapshot, 1_800_000_000.5)
    return out.getvalue()


def decoded(data: bytes) -> HistorySnapshot:
    return read_history(io.BytesIO(data), len(data))[0]


def test_the_format_round_trips_a_snapshot_exactly():
    router = busy_router()
    snapshot = router.snapshot()
    snapshot = HistorySnapshot(
        snapshot.started,
        snapshot.last,
        ((T0 - 50, T0 - 10),),
        snapshot.messages,
        snapshot.evictions,
    )
    data = encoded(snapshot)
    assert data.startswith(b"KRAKENHF\x00\x01")
    assert decoded(data) == snapshot
    header = read_history(io.BytesIO(data), len(data))[1]
    assert header["num_router_shards"] == 3 and header["written_at"] == 1_800_000_000.5
    assert any(records for records, _ in snapshot.evictions)  # evictions were written too


def test_the_file_is_about_the_size_of_what_it_keeps():
    router = busy_router(capacity=1000)
    snapshot = router.snapshot()
    kept = sum(len(p) + sum(len(t) for t in ts) for _, ts, p, _ in snapshot.messages)
    assert len(encoded(snapshot)) < kept + 40 * len(snapshot.messages) + 1024


def test_every_truncation_is_rejected():
    data = encoded(busy_router().snapshot())
    for n in range(len(data)):
        with pytest.raises(Rejected):
            decoded(data[:n])
    with pytest.raises(Rejected):
        decoded(data + b"\x00")


def test_any_changed_byte_is_rejected_and_nothing_else_is_raised():
    data = encoded(busy_router().snapshot())
    rng = random.Random(7)
    for position in [*range(40), *rng.sample(range(len(data)), 300)]:
        for flip in (0x01, 0x80, 0xFF):
            corrupt = bytearray(data)
            corrupt[position] ^= flip
            with pytest.raises(Rejected):
                decoded(bytes(corrupt))


def test_other_files_and_versions_are_rejected_with_a_reason():
    with pytest.raises(Rejected, match="not a Kraken history file"):
        decoded(b"[{kraken, []}].\n")
    data = bytearray(encoded(busy_router().snapshot()))
    data[9] = 2
    with pytest.raises(Rejected, match="format version 2"):
        decoded(bytes(data))


def test_a_huge_length_in_a_corrupt_file_is_not_allocated():
    data = bytearray(encoded(busy_router().snapshot()))
    data[10:14] = b"\xff\xff\xff\xff"  # the header's length
    with pytest.raises(Rejected):
        decoded(bytes(data))


# -- the life of the file ------------------------------------------------------------


def config(path, **options) -> Config:
    return Config(history_file=str(path), messages_stored_per_router_shard=5, **options)


def broker(cfg: Config, now: int = T0) -> LocalBroker:
    return LocalBroker.from_config(cfg, now)


def published(b: LocalBroker, *payloads: bytes, now: int = T0) -> None:
    queue = b.connect(lambda: None)
    b.publish(queue, [((b"a",), p) for p in payloads], lambda: now + 1)
    b.disconnect(queue)


def replay(b: LocalBroker, horizon: int) -> list[bytes] | None:
    queue: ClientQueue = b.connect(lambda: None)
    found = b.retro_subscribe(queue, horizon, (b"a",), horizon)
    payloads = [d.payload for d in queue.drain()] if found else None  # type: ignore[union-attr]
    b.disconnect(queue)
    return payloads


def test_a_graceful_stop_writes_the_file_and_the_next_start_reads_it_once(tmp_path):
    path = tmp_path / "history"
    cfg = config(path)
    first = broker(cfg)
    with history_kept(cfg, first):
        assert os.path.exists(f"{path}.running") and not path.exists()
        published(first, b"one", b"two")
    assert path.exists() and not os.path.exists(f"{path}.running")
    assert path.stat().st_mode & 0o777 == 0o600
    second = broker(cfg, T0 + 10 * SECOND)
    with history_kept(cfg, second):
        assert not path.exists()  # read once
        assert os.path.exists(f"{path}.running")
        assert replay(second, T0) == [b"one", b"two"]
    assert path.exists()


def test_a_run_that_did_not_stop_gracefully_leaves_its_mark_and_no_file_is_trusted(
    tmp_path, caplog
):
    path = tmp_path / "history"
    cfg = config(path)
    with history_kept(cfg, broker(cfg)):
        pass
    stale = path.read_bytes()  # from that graceful stop
    HistoryFile(str(path), 4).start(broker(cfg, T0 + SECOND))  # a run that never stops
    path.write_bytes(stale)  # and an old file back in place
    # the mark names a process that is gone
    mark = json.loads(running(path).read_text())
    mark["pid"] = dead_pid()
    running(path).write_text(json.dumps(mark))
    third = broker(cfg, T0 + 2 * SECOND)
    with caplog.at_level(logging.INFO, "kraken.server"), history_kept(cfg, third):
        assert not path.exists()
        assert replay(third, T0) is None
    assert "did not stop gracefully" in caplog.text


def running(path) -> Path:
    return path.with_name(path.name + ".running")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_a_live_server_holding_the_file_is_waited_for_then_left_alone(
    tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(history_file, "OWNER_WAIT", 0.3)
    path = tmp_path / "history"
    cfg = config(path)
    with history_kept(cfg, broker(cfg)):
        pass
    # a process whose command line says kraken, holding the mark
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "kraken"])
    try:
        # until it has exec'd, the child's command line is still this process's
        cmdline = Path(f"/proc/{holder.pid}/cmdline")
        if Path("/proc/self").exists():
            wait_until(lambda: b"kraken" in cmdline.read_bytes(), "the holder's exec")
        mark = {"pid": holder.pid, "host": os.uname().nodename, "started_at": 0}
        running(path).write_text(json.dumps(mark))
        other = broker(cfg)
        with caplog.at_level(logging.INFO, "kraken.server"), history_kept(cfg, other):
            assert path.exists()  # not read, not deleted
        assert "held by kraken pid" in caplog.text
        assert json.loads(running(path).read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_corrupt_file_is_set_aside_and_the_server_starts_fresh(tmp_path, caplog):
    path = tmp_path / "history"
    path.write_bytes(b"KRAKENHF\x00\x01garbage")
    cfg = config(path)
    b = broker(cfg)
    with caplog.at_level(logging.INFO, "kraken.server"), history_kept(cfg, b):
        assert replay(b, T0 - 1) is None
    assert "not used: its header is corrupt" in caplog.text
    assert (tmp_path / "history.rejected").read_bytes() == b"KRAKENHF\x00\x01garbage"
    assert read_history(path.open("rb"), path.stat().st_size)  # a new, good one


def test_a_file_of_another_shard_count_is_set_aside(tmp_path, caplog):
    path = tmp_path / "history"
    with history_kept(config(path, num_router_shards=8), broker(config(path, num_router_shards=8))):
        pass
    cfg = config(path, num_router_shards=4)
    with caplog.at_level(logging.INFO, "kraken.server"), history_kept(cfg, broker(cfg)):
        pass
    assert "written with num_router_shards 8, and this server has 4" in caplog.text
    assert (tmp_path / "history.rejected").exists()


def test_a_directory_that_cannot_hold_the_file_stops_the_start(tmp_path):
    cfg = config(tmp_path / "missing" / "history")
    with (
        pytest.raises(ConfigError, match="cannot use history_file"),
        history_kept(cfg, broker(cfg)),
    ):
        pass


def test_without_the_option_or_with_a_broker_that_keeps_no_history_nothing_happens(
    tmp_path, caplog
):
    with history_kept(Config()) as b:
        assert b is None

    class Elsewhere:  # a broker behind a network keeps its history there
        pass

    cfg = config(tmp_path / "history")
    elsewhere = Elsewhere()
    with (
        caplog.at_level(logging.INFO, "kraken.server"),
        history_kept(cfg, elsewhere) as b,  # type: ignore[arg-type]
    ):
        assert b is elsewhere
    assert "keeps no history" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_at_the_stop_is_logged_and_the_next_start_is_fresh(tmp_path, caplog):
    path = tmp_path / "history"
    cfg = config(path)
    first = broker(cfg)
    with caplog.at_level(logging.INFO, "kraken.server"), history_kept(cfg, first):
        published(first, b"one")
        path.mkdir()  # the rename over it will fail
    assert "cannot write history file" in caplog.text
    assert running(path).exists() and not (tmp_path / "history.tmp").exists()
    path.rmdir()
    second = broker(cfg, T0 + SECOND)
    with history_kept(cfg, second):
        assert replay(second, T0) is None
