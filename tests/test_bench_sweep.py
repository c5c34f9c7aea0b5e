"""The cost-growth sweep keeps working: a quick sweep against our server, and its points.

No timing is asserted: figures on a shared test machine mean nothing. What is
asserted is that each point runs with its correctness check passing, the table
has a row per point, and the points have the shape their sweep says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import Outcome  # noqa: E402
from benchmarks.sweep import (  # noqa: E402
    PER_CPU,
    QUICK_POINTS,
    Result,
    SweepFanout,
    params_for,
    plot,
    points,
    sweep_table,
)


def test_quick_subscribers_sweep_against_kraken_passes_every_check(tmp_path: Path) -> None:
    out_json = tmp_path / "sweep.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.sweep",
            "--quick",
            "--servers",
            "kraken",
            "--sweeps",
            "subscribers",
            "--duration",
            "0.5",
            "--json",
            str(out_json),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "correctness: every check passed" in out
    assert "FAIL" not in out
    # one row per point: it starts with the point's value, and ends with its check
    rows = [line.split() for line in out.splitlines() if line.split()[:1] != []]
    rows = [row for row in rows if row[0].replace(",", "").isdigit()]
    assert [int(row[0].replace(",", "")) for row in rows] == list(QUICK_POINTS["subscribers"])
    assert all(row[-1] == "ok" for row in rows)
    figures = json.loads(out_json.read_text())["sweeps"]["subscribers"]["points"]
    assert [p["value"] for p in figures] == list(QUICK_POINTS["subscribers"])
    for p in figures:
        kraken = p["servers"]["kraken"]
        assert kraken["errors"] == []
        assert kraken["figures"][PER_CPU] > 0


@pytest.mark.parametrize("quick", [True, False])
def test_every_topic_has_exactly_k_subscribers(quick: bool) -> None:
    for point in points("subscribers", quick):
        subscriptions, batches = SweepFanout(point).prepare(params_for(point, 0.1, quick))
        per_topic = Counter(t for ts in subscriptions for t in ts)
        assert len(per_topic) == point.topic_space
        assert set(per_topic.values()) == {point.value}
        assert all(len(set(ts)) == len(ts) for ts in subscriptions)
        sizes = {len(ts) for ts in subscriptions}
        assert max(sizes) - min(sizes) <= 1
        assert all(len(m) == 1 for batch in batches[0] for m in batch)


def test_topics_and_size_points_vary_one_thing() -> None:
    for point in points("topics", quick=False):
        _, batches = SweepFanout(point).prepare(params_for(point, 0.1))
        assert {len(set(m)) for batch in batches[0] for m in batch} == {point.value}
    sizes = points("size", quick=False)
    assert [p.payload_bytes for p in sizes] == [p.value for p in sizes]
    assert len({(p.subscribers, p.topic_space, p.topics_per_message) for p in sizes}) == 1


def fake_results() -> list[Result]:
    rows = []
    for i, point in enumerate(points("subscribers", quick=True)):
        outcomes = {
            kind: Outcome(figures=[(PER_CPU, 1000.0 * (i + 1) * factor, "higher")])
            for kind, factor in (("kraken", 1), ("redis", 3))
        }
        rows.append(Result(point, 10, outcomes))
    return rows


def test_table_has_a_row_per_point_and_the_ratio() -> None:
    text = sweep_table(fake_results(), ["kraken", "redis"])
    lines = text.splitlines()
    assert len(lines) == 2 + len(QUICK_POINTS["subscribers"])
    assert all("0.33x" in line for line in lines[2:])


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "img" / "cost.png"
    assert plot({"subscribers": fake_results()}, ["kraken", "redis"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_matplotlib_no_plot_and_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    path = tmp_path / "cost.png"
    assert not plot({"subscribers": fake_results()}, ["kraken", "redis"], path)
    assert not path.exists()
    assert "matplotlib is not installed" in capsys.readouterr().out
