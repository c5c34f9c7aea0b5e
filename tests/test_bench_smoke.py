"""The benchmark tool keeps working: a quick run against our server, and its checker.

No timing is asserted here: figures on a shared test machine mean nothing. What
is asserted is that every workload runs, its correctness check passes, and the
checker itself tells a wrong answer from a right one.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.wire import KrakenPoller, Shared, kraken_entry, kraken_messages_reply  # noqa: E402
from benchmarks.workloads import Failures, check_deliveries, payload  # noqa: E402


def test_quick_run_against_kraken_passes_every_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--servers", "kraken"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "correctness: every check passed" in out
    assert "FAIL" not in out
    for workload in ("fanout", "fanout-nosleep", "broadcast", "idle 200", "churn", "retro"):
        assert f"{workload} " in out
    rows = [line.split() for line in out.splitlines() if "correctness check" in line]
    assert len(rows) == 6
    assert all(row[-1] == "ok" for row in rows)
    assert "deliveries per server CPU-s" in out


def checked(received: list[tuple[tuple[bytes, ...], int]], expected: dict[object, object]) -> int:
    """Errors ``check_deliveries`` finds when one poller received ``received``."""

    async def run() -> int:
        poller = KrakenPoller(Shared(), "subscriber 0")
        entries = [kraken_entry(topics, payload(mid, 16)) for topics, mid in received]
        poller.replies.append((0.0, [kraken_messages_reply(entries)]))
        errors: list[str] = []
        fail = Failures(errors)
        check_deliveries("kraken", [poller], [dict(expected)], lambda mid: 0.0, fail)  # type: ignore[arg-type]
        return fail.count

    return asyncio.run(run())


def test_checker_accepts_exactly_the_expected_deliveries() -> None:
    assert checked([((b"a",), 1), ((b"a", b"b"), 2)], {1: (b"a",), 2: (b"a", b"b")}) == 0


def test_checker_rejects_missing_duplicate_unexpected_misrouted_and_reordered() -> None:
    want = {1: (b"a",), 2: (b"a",)}
    assert checked([((b"a",), 1)], want) == 1  # missing
    assert checked([((b"a",), 1), ((b"a",), 1), ((b"a",), 2)], want) == 1  # duplicate
    assert checked([((b"a",), 1), ((b"a",), 2), ((b"a",), 3)], want) == 1  # unexpected
    assert checked([((b"b",), 1), ((b"a",), 2)], want) == 1  # wrong topics
    assert checked([((b"a",), 2), ((b"a",), 1)], want) == 1  # out of publish order
