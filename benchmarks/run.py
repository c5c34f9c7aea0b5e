"""The command line: run the workloads against each server, print the table.

Usage, from the repository root: ``python -m benchmarks [--quick] [--workloads
fanout,churn] [--servers kraken] [--kraken-src before=/path/to/old/src] [--rounds
N]``. Each workload gets fresh server processes, one after the other (never two
at once, so each has the machine to itself but for the load generator).
Exit status 1 when any correctness check failed.

An A/B run adds named Kraken servers, each from its own source tree, to the
line-up: every workload runs on each of them with the same load, and the table
gives each its column and its ratios to Redis and to this tree's Kraken. The
order of the servers is reversed from one workload to the next and from one
round to the next, so that over two rounds no server always goes first.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import SATURATED, Outcome, Window, machine, profile_summary, table
from benchmarks.servers import (
    SRC,
    ServerError,
    describe_source,
    kraken_source,
    redis_binary,
    redis_version,
    start_kraken,
    start_redis,
)
from benchmarks.workloads import Params, Workload, all_workloads

WORKLOAD_NAMES = (
    "fanout",
    "fanout-nosleep",
    "fanout-push",
    "broadcast",
    "idle",
    "idle-push",
    "churn",
    "retro",
)
KINDS = ("kraken", "redis")  # also the names of this tree's Kraken and of Redis in the report
SERVER_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Server:
    """A server of the line-up: its name in the report, the protocol the generator speaks
    to it (``kind``: kraken or redis), and for Kraken the source tree it runs from."""

    name: str
    kind: str
    src: Path = SRC


def line_up(
    parser: argparse.ArgumentParser, servers: list[str], sources: list[str]
) -> list[Server]:
    """The servers to run, in report order: this tree's Kraken, the named Kraken trees of
    ``--kraken-src NAME=DIR`` (paths checked later, by ``check_sources``), Redis."""
    extra: list[Server] = []
    for text in sources:
        name, sep, path = text.partition("=")
        if not sep or not path:
            parser.error(f"--kraken-src {text!r}: expected NAME=DIR")
        if not SERVER_NAME.fullmatch(name) or name in KINDS:
            parser.error(
                f"--kraken-src {text!r}: NAME is letters, digits, '_', '.' or '-', and neither "
                "kraken nor redis"
            )
        if any(s.name == name for s in extra):
            parser.error(f"--kraken-src: {name!r} given twice")
        extra.append(Server(name, "kraken", Path(path).expanduser()))
    lineup = [Server(kind, kind) for kind in servers if kind == "kraken"]
    lineup += extra
    lineup += [Server(kind, kind) for kind in servers if kind == "redis"]
    return lineup


def choices(
    parser: argparse.ArgumentParser, text: str, allowed: tuple[str, ...], what: str
) -> list[str]:
    """A comma-separated option's names, each one of ``allowed`` (else a usage error)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in allowed:
            parser.error(f"unknown {what} {name!r}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Kraken against Redis pub/sub: the same workloads, side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOAD_NAMES),
        help=f"comma-separated, from {', '.join(WORKLOAD_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--servers", default="kraken,redis", help="comma-separated: kraken, redis (default: both)"
    )
    parser.add_argument("--duration", type=float, help="seconds of each throughput window")
    parser.add_argument(
        "--idle-sizes", help="comma-separated connection counts for idle (default 5000,10000)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy record the Kraken server in each window, into DIR/<workload>.txt",
    )
    parser.add_argument(
        "--native", action="store_true", help="with --profile: C frames too (py-spy --native)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--kraken-src",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also run a Kraken from another source tree (DIR: its src, or the checkout), "
        "reported as NAME with its ratios to Redis and to this tree's Kraken; repeatable",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="run each workload N times on each server, in alternating order, and report "
        "the median of each figure (default 1)",
    )
    args = parser.parse_args(argv)
    args.workloads = choices(parser, args.workloads, WORKLOAD_NAMES, "workload")
    args.servers = choices(parser, args.servers, KINDS, "server")
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    args.lineup = line_up(parser, args.servers, args.kraken_src)
    return args


def check_sources(lineup: list[Server]) -> list[Server] | None:
    """The line-up with each named tree's ``src`` found and checked (``kraken_source``),
    or None after saying what is wrong."""
    checked = []
    for server in lineup:
        if server.kind == "kraken" and server.name != "kraken":
            try:
                server = Server(server.name, server.kind, kraken_source(server.src))
            except ServerError as error:
                print(f"--kraken-src {server.name}: {error}")
                return None
        checked.append(server)
    return checked


def params_from(args: argparse.Namespace) -> Params:
    params = Params.quick_params() if args.quick else Params()
    if args.duration:
        params.duration = args.duration
        params.idle_duration = max(args.duration, 2 * params.idle_period)
        params.retro_duration = args.duration
    if args.idle_sizes:
        params.idle_sizes = tuple(int(n) for n in args.idle_sizes.split(","))
    return params


def selected(workload: Workload, names: list[str]) -> bool:
    base = workload.name.split(" ")[0]  # idle 5,000 -> idle, idle-push 5,000 -> idle-push
    return base in names


async def run_one(
    workload: Workload, kind: str, params: Params, profile: Path | None, src: Path = SRC
) -> Outcome:
    if kind == "kraken":
        server = start_kraken(*workload.kraken_options(params), src=src)
    else:
        server = start_redis(workload.redis_max_clients(params))
    try:
        outcome = await workload.run(kind, server, params, profile)
        if not server.alive():
            outcome.errors.append(f"{kind} exited during the run:\n{server.output()[-2000:]}")
        return outcome
    finally:
        server.stop()


def order(lineup: list[Server], workload_index: int, round_index: int) -> list[Server]:
    """The line-up in the order of one round of one workload: reversed every other time."""
    return lineup[::-1] if (workload_index + round_index) % 2 else list(lineup)


def profile_path(directory: Path, workload: Workload, server: Server, round_label: str) -> Path:
    stem = workload.name.replace(" ", "-").replace(",", "")
    if server.name != "kraken":
        stem += f"-{server.name}"
    return directory / f"{stem}{round_label}.txt"


def merge(outcomes: list[Outcome]) -> Outcome:
    """One outcome for several rounds: each figure's median over the rounds that have it,
    every error (with its round), every generator share; the rounds' own figures kept."""
    if len(outcomes) == 1:
        return outcomes[0]
    merged = Outcome()
    seen: dict[str, str] = {}
    for outcome in outcomes:
        for name, _, better in outcome.figures:
            seen.setdefault(name, better)
    for name, better in seen.items():
        values = [v for o in outcomes for n, v, _ in o.figures if n == name and v is not None]
        merged.add(name, statistics.median(values) if values else None, better)
    for i, outcome in enumerate(outcomes, 1):
        merged.errors += [f"round {i}: {error}" for error in outcome.errors]
        merged.generator += [(f"{window}, round {i}", s) for window, s in outcome.generator]
        merged.rounds.append({n: v for n, v, _ in outcome.figures})
    return merged


async def run_all(args: argparse.Namespace, params: Params) -> dict[str, dict[str, Outcome]]:
    """Every selected workload on every server of the line-up that can run it, ``rounds``
    times in alternating order (``order``); the figures by workload, then server name."""
    results: dict[str, dict[str, Outcome]] = {}
    lineup: list[Server] = args.lineup
    workloads = [w for w in all_workloads(params) if selected(w, args.workloads)]
    for index, workload in enumerate(workloads):
        runs: dict[str, list[Outcome]] = {}
        for r in range(args.rounds):
            round_label = f" round {r + 1}/{args.rounds}" if args.rounds > 1 else ""
            for server in order(lineup, index, r):
                if server.kind not in workload.servers:
                    continue
                profile = None
                if args.profile is not None and server.kind == "kraken":
                    suffix = f"-r{r + 1}" if args.rounds > 1 else ""
                    profile = profile_path(args.profile, workload, server, suffix)
                outcome = await run_reported(
                    workload,
                    server.kind,
                    params,
                    profile,
                    workload.name + round_label,
                    src=server.src,
                    name=server.name,
                )
                runs.setdefault(server.name, []).append(outcome)
        results[workload.name] = {s.name: merge(runs[s.name]) for s in lineup if s.name in runs}
    return results


async def run_reported(
    workload: Workload,
    kind: str,
    params: Params,
    profile: Path | None,
    label: str,
    src: Path = SRC,
    name: str | None = None,
) -> Outcome:
    """``run_one``, a failure of any kind turned into the outcome's errors, its status on
    stderr as it ends (``name``: the server's in the report, by default its kind)."""
    started = time.monotonic()
    try:
        outcome = await run_one(workload, kind, params, profile, src)
    except (ServerError, AssertionError, ConnectionError, OSError) as error:
        outcome = Outcome(errors=[f"{type(error).__name__}: {error}"])
    except Exception:  # a bug of the tool: a failed run, with where it happened
        outcome = Outcome(errors=[traceback.format_exc()])
    status = "ok" if not outcome.errors else "FAIL"
    elapsed = time.monotonic() - started
    print(f"  {label} on {name or kind}: {status} ({elapsed:.1f} s)", file=sys.stderr, flush=True)
    return outcome


def figure(
    results: dict[str, dict[str, Outcome]], workload: str, server: str, name: str
) -> float | None:
    outcome = results.get(workload, {}).get(server)
    if outcome is None:
        return None
    return next((v for n, v, _ in outcome.figures if n == name), None)


def targets(results: dict[str, dict[str, Outcome]], params: Params) -> list[str]:
    """The targets of issue 5, each met or missed, from the figures of this run."""
    lines = []

    def ratio(workload: str, name: str) -> float | None:
        k, r = figure(results, workload, "kraken", name), figure(results, workload, "redis", name)
        return k / r if k is not None and r else None

    def line(text: str, value: float | None, ok: bool, shown: str) -> None:
        if value is not None:
            lines.append(f"target {text}: {'met' if ok else 'MISSED'} ({shown})")

    per_cpu = "deliveries per server CPU-s"
    fanout = ratio("fanout", per_cpu)
    line(
        "fanout >= 1.0x Redis per server CPU-s", fanout, (fanout or 0) >= 1.0, f"{fanout or 0:.2f}x"
    )
    for workload in ("fanout", "fanout-nosleep"):
        r = ratio(workload, per_cpu)
        line(f"{workload} >= 0.7x Redis per server CPU-s", r, (r or 0) >= 0.7, f"{r or 0:.2f}x")
    for size, cpu, rss in ((5_000, 5.0, 100.0), (10_000, 10.0, 200.0)):
        name = f"idle {size:,}"
        c = figure(results, name, "kraken", "server CPU % of a core")
        m = figure(results, name, "kraken", "server RSS MB")
        line(f"{name} under {cpu:.0f} % of a core", c, (c or 0) < cpu, f"{c or 0:.1f} %")
        line(f"{name} under {rss:.0f} MB RSS", m, (m or 0) < rss, f"{m or 0:.0f} MB")
    churn = ratio("churn", "ops per server CPU-s")
    line(
        "churn >= 1.0x Redis ops per server CPU-s", churn, (churn or 0) >= 1.0, f"{churn or 0:.2f}x"
    )
    fraction = figure(results, "broadcast", "kraken", "delivered fraction")
    line("broadcast delivers everything", fraction, fraction == 1.0, f"{fraction or 0:.4f}")
    p99 = figure(results, "broadcast", "kraken", "latency p99 ms")
    bound = params.broadcast_sleep * 1000 + 5
    line(f"broadcast p99 within {bound:.0f} ms", p99, (p99 or 0) <= bound, f"{p99 or 0:.1f} ms")
    return lines


def start_up(servers: list[str], what: str) -> tuple[Any, int] | None:
    """Check what a run needs and print its heading: (the uvloop module, the open-files
    limit, raised to its maximum), or None after saying what is missing."""
    if "redis" in servers and redis_binary() is None:
        print("redis-server not found: apt-get install redis-server, or pass --servers kraken")
        return None
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        print("uvloop is required for the load generator: pip install uvloop")
        return None

    import kraken

    print(f"Kraken {kraken.__version__} vs Redis {redis_version()}: {what}")
    print(f"machine: {machine()}")
    return uvloop, hard


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = params_from(args)
    Window.native = args.native
    ready = start_up(args.servers, "quick run" if params.quick else "full run")
    if ready is None:
        return 2
    uvloop, hard = ready
    lineup = check_sources(args.lineup)
    if lineup is None:
        return 2
    args.lineup = lineup
    for server in lineup:
        if server.kind == "kraken":
            print(f"{server.name}: {describe_source(server.src)}")
    if args.rounds > 1:
        print(f"{args.rounds} rounds, figures are medians; order alternates")
    if max(params.idle_sizes) + 200 > hard and {"idle", "idle-push"} & set(args.workloads):
        print(f"open files limited to {hard}: too few for idle {max(params.idle_sizes)}")
        return 2
    started = time.monotonic()
    results = uvloop.run(run_all(args, params))
    print()
    print(table(results, [s.name for s in args.lineup]))
    print()
    failed = False
    for workload, by_server in results.items():
        for kind, outcome in by_server.items():
            for window, share in outcome.generator:
                if share >= SATURATED:
                    print(
                        f"note: generator saturated in {workload} on {kind} ({window}): "
                        f"{100 * share:.0f}% of a core; the server may have been starved"
                    )
            for error in outcome.errors:
                failed = True
                print(f"FAIL {workload} on {kind}: {error}")
    if not params.quick:
        for text in targets(results, params):
            print(text)
    if args.profile is not None:
        for path in sorted(args.profile.glob("*.txt")):
            if path.stat().st_size:
                print()
                print(profile_summary(path))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    w: {
                        k: {
                            "figures": {n: v for n, v, _ in o.figures},
                            "errors": o.errors,
                            **({"rounds": o.rounds} if o.rounds else {}),
                        }
                        for k, o in by_server.items()
                    }
                    for w, by_server in results.items()
                },
                indent=1,
            )
        )
    verdict = "FAIL: a correctness check failed" if failed else "correctness: every check passed"
    print(f"{verdict} ({time.monotonic() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
