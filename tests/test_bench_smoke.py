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

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import Outcome, table  # noqa: E402
from benchmarks.run import Server, merge, order, parse_args  # noqa: E402
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
    for workload in (
        "fanout",
        "fanout-nosleep",
        "fanout-push",
        "broadcast",
        "idle 200",
        "idle-push 200",
        "churn",
        "retro",
    ):
        assert f"{workload} " in out
    rows = [line.split() for line in out.splitlines() if "correctness check" in line]
    assert len(rows) == 8
    assert all(row[-1] == "ok" for row in rows)
    assert "deliveries per server CPU-s" in out


def test_ab_run_of_one_tree_twice_reports_both_servers_and_their_ratio() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--servers",
            "kraken",
            "--kraken-src",
            f"same={ROOT / 'src'}",
            "--workloads",
            "fanout,idle",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "correctness: every check passed" in out
    assert f"same: {ROOT / 'src'}" in out
    lines = out.splitlines()
    head = next(line.split() for line in lines if line.startswith("workload "))
    assert head == ["workload", "figure", "kraken", "same", "same/kraken", "better"]
    checks = [line.split() for line in lines if "correctness check" in line]
    assert [row[-2:] for row in checks] == [["ok", "ok"], ["ok", "ok"]]
    for workload, figure in (
        ("fanout", "deliveries per server CPU-s"),
        ("idle 200", "polls/s"),  # its CPU may be below one clock tick in a quick window
    ):
        row = next(line for line in lines if line.startswith(f"{workload} ") and figure in line)
        kraken, same, ratio = row.split(figure)[1].split()[:3]
        assert float(kraken.replace(",", "")) > 0
        assert float(same.replace(",", "")) > 0
        assert ratio.endswith("x")


def test_ab_line_up_and_its_alternating_order() -> None:
    args = parse_args(["--kraken-src", "a=/tmp/a/src", "--kraken-src", "b=/tmp/b"])
    names = [s.name for s in args.lineup]
    assert names == ["kraken", "a", "b", "redis"]
    assert args.lineup[1] == Server("a", "kraken", Path("/tmp/a/src"))
    assert [s.name for s in order(args.lineup, 0, 1)] == names[::-1]
    assert [s.name for s in order(args.lineup, 1, 1)] == names


@pytest.mark.parametrize("source", ["kraken=/tmp", "redis=/tmp", "a b=/tmp", "a=", "/tmp"])
def test_ab_refuses_a_bad_kraken_src(source: str) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--kraken-src", source])


def test_ab_table_has_each_tree_against_redis_and_us() -> None:
    per_cpu = "deliveries per server CPU-s"
    results = {
        "fanout": {
            name: Outcome(figures=[(per_cpu, value, "higher")])
            for name, value in (("kraken", 100.0), ("before", 80.0), ("redis", 200.0))
        }
    }
    lines = table(results, ["kraken", "before", "redis"]).splitlines()
    assert lines[0].split() == [
        "workload",
        "figure",
        "kraken",
        "before",
        "redis",
        "us/redis",
        "before/redis",
        "before/kraken",
        "better",
    ]
    assert lines[2].split()[-4:] == ["0.50x", "0.40x", "0.80x", "higher"]


def test_rounds_merge_to_the_median_of_each_figure() -> None:
    rounds = [
        Outcome(figures=[("x", value, "higher"), ("y", None, "")], generator=[("window", 0.5)])
        for value in (3.0, 1.0, 2.0)
    ]
    rounds[1].errors.append("bad")
    merged = merge(rounds)
    assert merged.figures == [("x", 2.0, "higher"), ("y", None, "")]
    assert merged.errors == ["round 2: bad"]
    assert len(merged.generator) == 3
    assert [r["x"] for r in merged.rounds] == [3.0, 1.0, 2.0]


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


def test_the_proxy_hop_benchmark_runs_and_the_link_is_one_client_upstream() -> None:
    from benchmarks.proxy import run

    figures = run(messages=50, interval=0.002, local=20)
    # the node delivers each message to its own subscriber and to the proxy's link only,
    # however many subscribers the proxy has (no timing asserted: a shared machine)
    assert figures["node deliveries per message (its subscriber + the link)"] == 2.0
    assert figures["messages"] == 50
