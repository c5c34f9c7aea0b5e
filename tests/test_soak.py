"""The soak test (benchmarks/soak.py): its verdict on synthetic samples, and a 2-minute run.

The verdict tests are fast and exact: a flat series passes, a leak of either RSS or fds
fails with its numbers, and so do fds beyond the connections held. The 2-minute run is the
short version of ``make soak``: a real server under the whole mixed load, which must pass
(no plot: matplotlib may be missing here).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.soak import (  # noqa: E402
    SERVER_OPTIONS,
    BadReply,
    Bounds,
    ControlMessage,
    ControlSubscriber,
    Epoch,
    MiB,
    Sample,
    ceiling,
    fit,
    judge,
    parse_entries,
    parse_metrics,
)


def series(
    seconds: int,
    rss_mib: float = 50.0,
    rss_per_hour: float = 0.0,
    fds: int = 80,
    fds_per_hour: float = 0.0,
    own: int = 60,
    noise_mib: float = 0.5,
    seed: int = 0,
) -> list[Sample]:
    """One sample a second: RSS and fds on a line (plus noise), ``own`` connections held."""
    rng = random.Random(seed)
    out = []
    for t in range(seconds + 1):
        rss = rss_mib + rss_per_hour * t / 3600 + rng.uniform(-noise_mib, noise_mib)
        n = fds + round(fds_per_hour * t / 3600) + rng.randint(-3, 3)
        out.append(Sample(float(t), int(rss * MiB), n, own + round(fds_per_hour * t / 3600)))
    return out


# explicit, so that the tests do not move with the defaults
BOUNDS = Bounds(base_fds=15, rss_floor_mib=8, rss_mib_per_hour=8, fd_margin=64, fd_growth=32)


def test_fit_finds_the_line() -> None:
    slope, intercept = fit([0, 1, 2, 3], [1, 3, 5, 7])
    assert slope == pytest.approx(2)
    assert intercept == pytest.approx(1)
    assert fit([5, 5], [1, 2]) == (0.0, 1.5)  # no spread in x: flat


def test_a_flat_noisy_series_passes() -> None:
    figures, failures = judge(series(1800, noise_mib=2.0), BOUNDS)
    assert failures == []
    assert abs(figures["rss_trend_growth_mib"]) < 1
    assert figures["window_start_s"] == 360  # 20 % warm-up
    assert figures["rss_allowed_growth_mib"] == pytest.approx(8 + 8 * 1440 / 3600, abs=0.01)


def test_growth_during_the_warm_up_alone_passes() -> None:
    samples = series(600)
    for s in samples[:120]:  # the first 20 %: climbing from 20 MiB to 50
        s.rss = int((20 + 30 * s.t / 120) * MiB)
    assert judge(samples, BOUNDS)[1] == []


def test_an_rss_leak_fails_with_its_numbers() -> None:
    figures, failures = judge(series(1800, rss_per_hour=40), BOUNDS)
    assert len(failures) == 1
    assert failures[0].startswith("RSS grows: its trend rises 16.")
    assert "MiB/h" in failures[0] and "more than the 11.2 MiB allowed" in failures[0]
    assert figures["rss_slope_mib_per_hour"] == pytest.approx(40, rel=0.05)


def test_the_floor_absorbs_a_small_rise_on_a_short_run() -> None:
    # 2 minutes: 5 MiB of trend stays under the 8 MiB floor; 12 does not
    assert judge(series(120, rss_per_hour=5 * 3600 / 96), BOUNDS)[1] == []
    assert judge(series(120, rss_per_hour=12 * 3600 / 96), BOUNDS)[1] != []


def test_a_lowered_bound_fails_a_run_that_passed() -> None:
    samples = series(600, rss_per_hour=30)
    assert judge(samples, BOUNDS)[1] == []
    failures = judge(samples, Bounds(base_fds=15, rss_floor_mib=1, rss_mib_per_hour=1))[1]
    assert [f.split(":")[0] for f in failures] == ["RSS grows"]


def test_rss_above_the_ceiling_fails() -> None:
    samples = series(300)
    samples[100].rss = 300 * MiB
    failures = judge(samples, Bounds(base_fds=15, rss_ceiling=200 * MiB))[1]
    assert any(f.startswith("RSS reached 300.0 MiB at 100 s, above the ceiling") for f in failures)


def test_fds_beyond_the_live_connections_fail() -> None:
    samples = series(300)
    samples[200].fds = samples[200].own + 15 + 64 + 1
    failures = judge(samples, BOUNDS)[1]
    assert failures == [
        "open fds beyond the live connections in 1 of 301 samples; worst at 200 s, "
        f"{samples[200].fds} fds for {samples[200].own} connections held open by the clients "
        "(allowed: 15 at start + 64)"
    ]


def test_connections_piling_up_fail_on_the_fd_trend() -> None:
    # a client holding ever more connections: fds follow the connections held (no fd leaks
    # in the server) but grow, by 1 a second
    figures, failures = judge(series(300, fds_per_hour=3600), BOUNDS)
    assert any(f.startswith("open fds grow: their trend rises 2") for f in failures)
    assert figures["fd_trend_growth"] > BOUNDS.fd_growth


def test_too_few_samples_fail() -> None:
    assert judge(series(2), BOUNDS)[1] == ["only 3 samples: too few to judge growth"]


def test_the_ceiling_follows_the_limits() -> None:
    options = dict(SERVER_OPTIONS)
    low = ceiling(options, 40 * MiB, 100)
    options["messages_stored_per_router_shard"] = 2 * int(
        options["messages_stored_per_router_shard"]
    )
    assert ceiling(options, 40 * MiB, 100) > low
    assert ceiling(options, 40 * MiB, 200) > ceiling(options, 40 * MiB, 100)


def control(
    seq: int, topics: tuple[bytes, ...], sent: float, acked: float | None
) -> ControlMessage:
    payload = b"ctl %d x" % seq
    return ControlMessage(seq, topics, zlib.crc32(payload), len(payload), sent, acked)


def entry(seq: int, topics: list[bytes]) -> tuple[list[bytes], bytes]:
    return topics, b"ctl %d x" % seq


def test_control_subscriber_exactly_once() -> None:
    ledger = {
        1: control(1, (b"ctl:1",), sent=0.5, acked=0.6),  # before the subscribe: excused
        2: control(2, (b"ctl:9", b"ctl:1"), sent=2.0, acked=2.1),
        3: control(3, (b"ctl:9",), sent=3.0, acked=3.1),  # not on its topics
        4: control(4, (b"ctl:2",), sent=4.0, acked=4.1),
        5: control(5, (b"ctl:1",), sent=5.0, acked=None),  # never acknowledged: excused
    }
    sub = ControlSubscriber("c", [b"ctl:1", b"ctl:2"])
    sub.epochs.append(Epoch(1.0))
    sub.take([entry(2, [b"ctl:1"])], ledger)
    assert sub.errors == []
    assert sub.missing(ledger) == [4]
    sub.take([entry(4, [b"ctl:2"]), entry(2, [b"ctl:1"])], ledger)
    assert sub.missing(ledger) == []
    assert sub.errors == ["c: message 2 arrived 2 times"]


def test_control_subscriber_catches_wrong_topics_bytes_and_order() -> None:
    ledger = {n: control(n, (b"a", b"b"), sent=n, acked=n) for n in range(1, 4)}
    sub = ControlSubscriber("c", [b"a", b"b"])
    sub.epochs.append(Epoch(0.0))
    sub.take([entry(2, [b"b", b"a"])], ledger)
    sub.take([entry(1, [b"a", b"b"])], ledger)
    sub.take([([b"a", b"b"], b"ctl 3 y")], ledger)
    sub.take([([b"a"], b"ctl 9 x")], ledger)
    assert sub.errors == [
        "c: message 2 names topics [b'b', b'a'], expected [b'a', b'b']",
        "c: message 1 arrived after message 2",
        "c: message 3 arrived with other bytes",
        "c: message 9 was never published",
    ]


def test_not_found_excuses_only_the_gap() -> None:
    ledger = {
        1: control(1, (b"a",), sent=2.0, acked=2.1),  # polled before the break: due
        2: control(2, (b"a",), sent=5.0, acked=5.1),  # in the gap: excused
        3: control(3, (b"a",), sent=9.0, acked=9.1),  # after the new subscribe: due
    }
    sub = ControlSubscriber("c", [b"a"])
    sub.epochs = [Epoch(1.0, until=3.0), Epoch(8.0)]
    assert sub.missing(ledger) == [1, 3]


def test_parse_metrics_keeps_each_series() -> None:
    text = (
        "# HELP kraken_connections connected clients\n"
        "kraken_connections 3.0\n"
        'kraken_disconnects_total{reason="internal_error"} 0.0\n'
        "process_open_fds 19.0\n"
    )
    assert parse_metrics(text) == {
        "kraken_connections": 3.0,
        'kraken_disconnects_total{reason="internal_error"}': 0.0,
        "process_open_fds": 19.0,
    }


def test_parse_entries() -> None:
    block = b"MESSAGE a b 2\r\nhi\r\nMESSAGE c 4\r\n\r\nxx"
    assert parse_entries(block) == [([b"a", b"b"], b"hi"), ([b"c"], b"\r\nxx")]
    with pytest.raises(BadReply, match="entry length"):
        parse_entries(b"MESSAGE a 5\r\nhi")


@pytest.mark.timeout(300)
def test_two_minute_soak_passes(tmp_path: Path) -> None:
    out_json = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--minutes", "2", "--json", str(out_json)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "soak: pass" in result.stdout
    report = json.loads(out_json.read_text())
    assert report["failures"] == []
    assert len(report["samples"]) >= 100
    counts = report["counts"]
    # every kind of load really ran
    for name in (
        "polls",
        "published",
        "control_published",
        "churn_cycles",
        "slow_closed",
        "stalled_closed",
        "idle_closed",
        "fuzz_requests",
        "scrapes",
    ):
        assert counts[name] > 0, name
