"""How cost grows: the fan-out workload swept one parameter at a time, Kraken against Redis.

Usage, from the repository root: ``python -m benchmarks.sweep [--quick] [--sweeps
subscribers,topics,size] [--servers kraken,redis] [--duration S] [--json FILE] [--plot
[FILE]]``. Exit status 1 when any correctness check failed.

Every point is the ``fanout`` workload of ``benchmarks.workloads`` (its closed-loop
publishers, its pollers and subscribers, its checks) with its subscriptions and messages
replaced, run on a fresh server per point and server, in one bounded window. The base
point: 200 subscriber connections on 10 topics each, a topic space of 1,000 topics (2
subscribers per topic on average), messages on 1 topic with 16-byte payloads, 4 publishers
sending batches of 50 as fast as they are acknowledged, Kraken pollers sleeping 10 ms after
an empty poll. Each sweep moves one thing away from it:

- ``subscribers``: subscribers per topic, exactly k on every topic (a topic space of
  ceil(200 x 10 / k) topics, so each subscriber is still on 10 or 11 topics);
- ``topics``: topics per message, drawn from the base topic space. Kraken delivers a
  message once to a subscriber of several of its topics (one entry listing them), Redis
  once per channel (one ``PUBLISH`` per topic): with 10 of 1,000 topics per subscriber the
  two counts differ by a few per cent at 16 topics;
- ``size``: payload bytes.

The messages each publisher may send are encoded before the window and bounded (by a rate
no server here reaches, and by the deliveries and delivered bytes the generator keeps for
the checks); a window cut short because the publishers ran out is marked ``*``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as benchmarks/sweep.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import SATURATED, Outcome, fmt
from benchmarks.run import choices, run_reported, start_up
from benchmarks.servers import ROOT
from benchmarks.workloads import Fanout, Params

SERVERS = ("kraken", "redis")
SWEEPS = ("subscribers", "topics", "size")
POINTS = {
    "subscribers": (1, 4, 16, 64, 200),
    "topics": (1, 2, 4, 8, 16),
    "size": (16, 256, 1_024, 4_096, 16_384),
}
QUICK_POINTS = {
    "subscribers": (1, 8, 50),
    "topics": (1, 4, 16),
    "size": (16, 1_024, 16_384),
}
TITLES = {
    "subscribers": "subscribers per topic",
    "topics": "topics per message",
    "size": "payload bytes",
}
SUBSCRIBERS = 200  # subscriber connections (--quick: 50)
QUICK_SUBSCRIBERS = 50
TOPICS_PER_SUBSCRIBER = 10
BASE_SUBSCRIBERS_PER_TOPIC = 2  # on average, in the base topic space
DURATION = 3.0  # seconds of each window (--quick: 1)
QUICK_DURATION = 1.0
# what the publishers may send in a window, encoded before it
BATCHES_PER_SECOND = 2_500  # per publisher: 500,000 messages/s in all, beyond any server here
MAX_DELIVERIES = 3_000_000  # per point and server: every one is kept and checked, ~4 us each
QUICK_MAX_DELIVERIES = 1_000_000
MAX_DELIVERED_BYTES = 2**30  # payload bytes, likewise (the generator holds them all)
QUICK_MAX_DELIVERED_BYTES = 256 * 2**20
DEFAULT_PLOT = ROOT / "docs" / "img" / "cost-growth.png"
PER_CPU = "deliveries per server CPU-s"
COLUMNS = (  # (figure, heading in the table)
    (PER_CPU, PER_CPU),
    ("server CPU-s", "server CPU-s"),
    ("deliveries/s", "deliveries/s"),
    ("latency p50 ms", "latency p50 ms"),
    ("latency p99 ms", "latency p99 ms"),
)


@dataclass(frozen=True)
class Point:
    """One point of a sweep: the shape of its subscriptions and messages."""

    sweep: str
    value: int
    subscribers: int = SUBSCRIBERS
    topics_per_subscriber: int = TOPICS_PER_SUBSCRIBER
    topic_space: int = SUBSCRIBERS * TOPICS_PER_SUBSCRIBER // BASE_SUBSCRIBERS_PER_TOPIC
    exact: int = 0  # when set: exactly this many subscribers on every topic
    topics_per_message: int = 1
    payload_bytes: int = 16

    @property
    def fanout(self) -> float:
        """Expected Redis pushes per message (Kraken deliveries: the same or a little less)."""
        if self.exact:
            return float(self.exact * self.topics_per_message)
        per_topic = self.subscribers * self.topics_per_subscriber / self.topic_space
        return self.topics_per_message * per_topic


def points(sweep: str, quick: bool) -> list[Point]:
    n = QUICK_SUBSCRIBERS if quick else SUBSCRIBERS
    base = Point(
        sweep,
        0,
        subscribers=n,
        topic_space=n * TOPICS_PER_SUBSCRIBER // BASE_SUBSCRIBERS_PER_TOPIC,
    )
    out = []
    for value in (QUICK_POINTS if quick else POINTS)[sweep]:
        if sweep == "subscribers":
            k = min(value, n)
            space = math.ceil(n * TOPICS_PER_SUBSCRIBER / k)
            out.append(replace(base, value=k, exact=k, topic_space=space))
        elif sweep == "topics":
            out.append(replace(base, value=value, topics_per_message=value))
        else:
            out.append(replace(base, value=value, payload_bytes=value))
    return out


def params_for(point: Point, duration: float, quick: bool = False) -> Params:
    """The ``Params`` of ``fanout`` for one point, with its bound on prepared batches."""
    params = replace(
        Params(),
        duration=duration,
        payload_bytes=point.payload_bytes,
        fanout_subscribers=point.subscribers,
        fanout_topics=point.topic_space,
        fanout_topics_per_subscriber=point.topics_per_subscriber,
    )
    per_batch = params.fanout_publishers * params.fanout_batch
    fanout = max(point.fanout, 1.0)
    deliveries = QUICK_MAX_DELIVERIES if quick else MAX_DELIVERIES
    size = QUICK_MAX_DELIVERED_BYTES if quick else MAX_DELIVERED_BYTES
    messages = min(deliveries / fanout, size / (fanout * point.payload_bytes))
    params.fanout_max_batches = max(
        1, min(math.ceil(BATCHES_PER_SECOND * duration), int(messages // per_batch))
    )
    return params


class SweepFanout(Fanout):
    """``fanout`` with the subscriptions and messages of one point."""

    def __init__(self, point: Point) -> None:
        super().__init__(sleep=True)
        self.point = point
        self.name = f"{point.sweep} {point.value}"

    def prepare(
        self, params: Params
    ) -> tuple[list[list[bytes]], list[list[list[tuple[bytes, ...]]]]]:
        point = self.point
        rng = random.Random(5)
        topics = [b"t%d" % i for i in range(point.topic_space)]
        if point.exact:
            # topic t to subscribers t*k .. t*k+k-1 (mod n): k distinct ones on every topic,
            # and every subscriber on the same number of topics, give or take one
            n, k = point.subscribers, point.exact
            subscriptions: list[list[bytes]] = [[] for _ in range(n)]
            for t, topic in enumerate(topics):
                for j in range(k):
                    subscriptions[(t * k + j) % n].append(topic)
        else:
            subscriptions = [
                rng.sample(topics, point.topics_per_subscriber) for _ in range(point.subscribers)
            ]
        m = point.topics_per_message
        space = len(topics)
        batches = [
            [
                [
                    (topics[rng.randrange(space)],) if m == 1 else tuple(rng.sample(topics, m))
                    for _ in range(params.fanout_batch)
                ]
                for _ in range(params.fanout_max_batches)
            ]
            for _ in range(params.fanout_publishers)
        ]
        return subscriptions, batches


# -- running ---------------------------------------------------------------------


@dataclass
class Result:
    """One point, measured on each server."""

    point: Point
    prepared: int  # messages the publishers could send, in all
    outcomes: dict[str, Outcome]

    def figure(self, kind: str, name: str) -> float | None:
        outcome = self.outcomes.get(kind)
        if outcome is None:
            return None
        return next((v for n, v, _ in outcome.figures if n == name), None)

    def ok(self, kind: str) -> bool:
        outcome = self.outcomes.get(kind)
        return outcome is not None and not outcome.errors

    def window(self, kind: str) -> float | None:
        """Seconds of the window (CPU-s over the share of a core, both figures of fanout)."""
        cpu, share = self.figure(kind, "server CPU-s"), self.figure(kind, "server CPU % of a core")
        return 100 * cpu / share if cpu and share else None

    def published(self, kind: str) -> int | None:
        rate, wall = self.figure(kind, "messages published/s"), self.window(kind)
        return round(rate * wall) if rate is not None and wall is not None else None

    def cut_short(self, kind: str) -> bool:
        """The publishers sent every prepared message: the window ended before its time."""
        published = self.published(kind)
        return published is not None and published >= self.prepared

    def ratio(self, name: str) -> float | None:
        k, r = self.figure("kraken", name), self.figure("redis", name)
        return k / r if k is not None and r and self.ok("kraken") and self.ok("redis") else None


async def run_point(
    point: Point, servers: Sequence[str], duration: float, quick: bool = False
) -> Result:
    workload = SweepFanout(point)
    params = params_for(point, duration, quick)
    prepared = params.fanout_publishers * params.fanout_max_batches * params.fanout_batch
    result = Result(point, prepared, {})
    for kind in servers:
        label = f"{TITLES[point.sweep]} {point.value}"
        result.outcomes[kind] = await run_reported(workload, kind, params, None, label)
    return result


async def run_sweeps(
    sweeps: Sequence[str], servers: Sequence[str], duration: float, quick: bool
) -> dict[str, list[Result]]:
    results: dict[str, list[Result]] = {}
    for sweep in sweeps:
        results[sweep] = [
            await run_point(p, servers, duration, quick) for p in points(sweep, quick)
        ]
    return results


# -- the tables ------------------------------------------------------------------


def describe(sweep: str, quick: bool, duration: float) -> str:
    """What the sweep holds fixed, in a line."""
    n = QUICK_SUBSCRIBERS if quick else SUBSCRIBERS
    space = n * TOPICS_PER_SUBSCRIBER // BASE_SUBSCRIBERS_PER_TOPIC
    params = Params()
    fixed = {
        "subscribers": f"each subscriber on {TOPICS_PER_SUBSCRIBER} topics, 1 topic per "
        "message, 16-byte payloads",
        "topics": f"each on {TOPICS_PER_SUBSCRIBER} of {space:,} topics, 16-byte payloads",
        "size": f"each on {TOPICS_PER_SUBSCRIBER} of {space:,} topics, 1 topic per message",
    }[sweep]
    return (
        f"{TITLES[sweep]}: {n} subscriber connections, {fixed}; {params.fanout_publishers} "
        f"publishers, batches of {params.fanout_batch}; {duration:g} s windows"
    )


def sweep_table(results: Sequence[Result], servers: Sequence[str]) -> str:
    """One row per point: each figure per server (and Kraken/Redis for the first), the checks."""
    both = "kraken" in servers and "redis" in servers
    sweep = results[0].point.sweep if results else ""
    # groups of columns: (heading, [(sub-heading, cell per row)])
    groups: list[tuple[str, list[tuple[str, list[str]]]]] = [
        (
            "",
            [
                (
                    TITLES.get(sweep, sweep),
                    [f"{r.point.value:,}" for r in results],
                )
            ],
        )
    ]
    for name, heading in COLUMNS:
        columns = []
        for kind in servers:
            cells = []
            for r in results:
                cell = fmt(r.figure(kind, name)) if r.ok(kind) else "-"
                if name == PER_CPU and r.cut_short(kind):
                    cell += "*"
                cells.append(cell)
            columns.append((kind, cells))
        if both and name == PER_CPU:
            columns.append(
                (
                    "kraken/redis",
                    [
                        f"{ratio:.2f}x" if (ratio := r.ratio(name)) is not None else "-"
                        for r in results
                    ],
                )
            )
        groups.append((heading, columns))
    groups.append(
        (
            "check",
            [(kind, ["ok" if r.ok(kind) else "FAIL" for r in results]) for kind in servers],
        )
    )
    head1: list[str] = []
    head2: list[str] = []
    body: list[list[str]] = [[] for _ in results]
    for heading, columns in groups:
        widths = [max(len(sub), *(len(c) for c in cells)) for sub, cells in columns]
        span = sum(widths) + 2 * (len(widths) - 1)
        if len(heading) > span:
            widths[-1] += len(heading) - span
            span = len(heading)
        head1.append(heading.ljust(span))
        head2.append("  ".join(sub.rjust(w) for (sub, _), w in zip(columns, widths, strict=True)))
        for i, row in enumerate(body):
            row.append(
                "  ".join(cells[i].rjust(w) for (_, cells), w in zip(columns, widths, strict=True))
            )
    sep = "   "
    lines = [sep.join(head1), sep.join(head2), *(sep.join(row) for row in body)]
    return "\n".join(line.rstrip() for line in lines)


def notes(results: dict[str, list[Result]]) -> tuple[list[str], list[str]]:
    """Notes (generator saturated, windows cut short) and failures, one line each."""
    out: list[str] = []
    failures: list[str] = []
    for sweep, rows in results.items():
        for r in rows:
            where = f"{TITLES[sweep]} {r.point.value:,}"
            for kind, outcome in r.outcomes.items():
                for _, share in outcome.generator:
                    if share >= SATURATED:
                        out.append(
                            f"note: generator saturated at {where} on {kind}: "
                            f"{100 * share:.0f}% of a core; the server may have been starved"
                        )
                if r.cut_short(kind):
                    out.append(
                        f"note: * at {where} on {kind}: the publishers sent all "
                        f"{r.prepared:,} prepared messages in {r.window(kind) or 0:.2f} s"
                    )
                for error in outcome.errors:
                    failures.append(f"FAIL {where} on {kind}: {error}")
    return out, failures


def to_json(results: dict[str, list[Result]], duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {"duration": duration, "sweeps": {}}
    for sweep, rows in results.items():
        entries = []
        for r in rows:
            servers = {}
            for kind, outcome in r.outcomes.items():
                published, cpu = r.published(kind), r.figure(kind, "server CPU-s")
                servers[kind] = {
                    "figures": {n: v for n, v, _ in outcome.figures},
                    "messages published": published,
                    "messages per server CPU-s": published / cpu if published and cpu else None,
                    "window s": r.window(kind),
                    "cut short": r.cut_short(kind),
                    "generator CPU share": max((s for _, s in outcome.generator), default=None),
                    "errors": outcome.errors,
                }
            names = [n for n, _ in COLUMNS]
            entries.append(
                {
                    "value": r.point.value,
                    "point": {k: v for k, v in asdict(r.point).items() if k != "sweep"},
                    "prepared messages": r.prepared,
                    "servers": servers,
                    "kraken/redis": {n: r.ratio(n) for n in names},
                }
            )
        out["sweeps"][sweep] = {"parameter": TITLES[sweep], "points": entries}
    return out


# -- the plot --------------------------------------------------------------------


def short(value: float) -> str:
    """1,500 -> 1.5k, 2,000,000 -> 2M: an axis label."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"


def plot(results: dict[str, list[Result]], servers: Sequence[str], path: Path) -> bool:
    """Deliveries per server CPU-s against each swept parameter, a panel per sweep, as PNG.

    False (and a message) when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator
    except ImportError:
        print(
            "matplotlib is not installed: no plot (pip install matplotlib, or "
            "pip install -e '.[bench]'); the tables above are complete"
        )
        return False
    styles = {"kraken": ("tab:blue", "o"), "redis": ("tab:red", "s")}
    sweeps = [s for s in results if results[s]]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(3.6 * len(sweeps), 3.2), squeeze=False)
    for ax, sweep in zip(axes[0], sweeps, strict=True):
        rows = results[sweep]
        for kind in servers:
            xs = [r.point.value for r in rows if r.ok(kind) and r.figure(kind, PER_CPU)]
            ys = [r.figure(kind, PER_CPU) for r in rows if r.ok(kind) and r.figure(kind, PER_CPU)]
            color, marker = styles.get(kind, ("black", "^"))
            ax.plot(xs, ys, marker=marker, color=color, label=kind, linewidth=1.5, markersize=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [r.point.value for r in rows]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:,}" if t < 10_000 else f"{t // 1024}K" for t in ticks])
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: short(y)))
        ax.set_xlabel(TITLES[sweep])
        ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("deliveries per server CPU-s")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("fan-out: cost growth (higher is cheaper)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- the command line ------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sweep",
        description="How cost grows with subscribers per topic, topics per message and "
        "payload size: the fan-out workload, Kraken against Redis.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 points per sweep, 50 subscribers, 1 s windows"
    )
    parser.add_argument(
        "--sweeps",
        default=",".join(SWEEPS),
        help=f"comma-separated, from {', '.join(SWEEPS)} (default: all)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated: kraken, redis (default: both)",
    )
    parser.add_argument(
        "--duration", type=float, help=f"seconds of each window (default {DURATION:g})"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--plot",
        type=Path,
        nargs="?",
        const=DEFAULT_PLOT,
        metavar="FILE",
        help="write a PNG of deliveries per server CPU-s per sweep (default FILE: "
        "docs/img/cost-growth.png); needs matplotlib",
    )
    args = parser.parse_args(argv)
    args.sweeps = choices(parser, args.sweeps, SWEEPS, "sweep")
    args.servers = choices(parser, args.servers, SERVERS, "server")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be positive")
    if args.duration is None:
        args.duration = QUICK_DURATION if args.quick else DURATION
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ready = start_up(args.servers, "quick sweep" if args.quick else "full sweep")
    if ready is None:
        return 2
    uvloop, _files = ready
    started = time.monotonic()
    results = uvloop.run(run_sweeps(args.sweeps, args.servers, args.duration, args.quick))
    for sweep, rows in results.items():
        print()
        print(describe(sweep, args.quick, args.duration))
        print(sweep_table(rows, args.servers))
    print()
    lines, failures = notes(results)
    for line in [*lines, *failures]:
        print(line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(results, args.duration), indent=1))
    if args.plot is not None and plot(results, args.servers, args.plot):
        print(f"plot: {args.plot}")
    verdict = "FAIL: a correctness check failed" if failures else "correctness: every check passed"
    print(f"{verdict} ({time.monotonic() - started:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
