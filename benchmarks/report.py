"""Figures, the side-by-side table, and the py-spy profile summary.

A workload returns ``Figure`` rows, each with a value per server; the table
prints them with the ratio us/Redis and says which way is better. In an A/B
run each other Kraken tree has its column and its ratios to Redis and to us.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

from benchmarks.servers import ServerProcess

SATURATED = 0.90  # generator CPU, as a fraction of one core, from which it may be the bottleneck
HIGHER = "higher"
LOWER = "lower"


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_figures(name: str, seconds: list[float]) -> list[tuple[str, float | None, str]]:
    """p50, p99 and max of ``seconds``, as (figure, milliseconds, better) rows."""
    ms = [s * 1000 for s in seconds]
    return [
        (f"{name} p50 ms", percentile(ms, 50), LOWER),
        (f"{name} p99 ms", percentile(ms, 99), LOWER),
        (f"{name} max ms", max(ms) if ms else None, LOWER),
    ]


def generator_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Outcome:
    """What one workload measured on one server."""

    figures: list[tuple[str, float | None, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    generator: list[tuple[str, float]] = field(default_factory=list)  # (window, share of a core)
    rounds: list[dict[str, float | None]] = field(default_factory=list)  # each round's, if merged

    def add(self, name: str, value: float | None, better: str = "") -> None:
        self.figures.append((name, value, better))


class Window:
    """A timed window: wall time, server CPU-seconds, generator CPU; optionally profiled."""

    native = False  # py-spy --native: C frames (uvloop, libc system calls) too

    def __init__(self, server: ServerProcess, profile: Path | None = None) -> None:
        self.server = server
        self.profile = profile
        self.wall = self.server_cpu = self.generator_cpu = 0.0
        self._profiler: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Window:
        if self.profile is not None:
            self._profiler = start_profiler(self.server.pid, self.profile, self.native)
        gc.disable()  # the generator's own collections would stall it in the window
        self._t0 = perf_counter()
        self._c0 = self.server.cpu_seconds()
        self._g0 = generator_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = perf_counter() - self._t0
        self.server_cpu = self.server.cpu_seconds() - self._c0
        self.generator_cpu = generator_cpu() - self._g0
        gc.enable()
        if self._profiler is not None:
            stop_profiler(self._profiler)

    @property
    def server_share(self) -> float:
        return self.server_cpu / self.wall if self.wall else 0.0

    @property
    def generator_share(self) -> float:
        return self.generator_cpu / self.wall if self.wall else 0.0


# -- profiling -------------------------------------------------------------------


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start_profiler(pid: int, output: Path, native: bool = False) -> subprocess.Popen[bytes]:
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy not found: pip install py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [binary, "record", "--pid", str(pid), "--rate", "200", "--format", "raw"]
    # nonblocking: never pause the server; native stacks need it paused while read
    argv += ["--output", str(output), "--native" if native else "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# frames every sample passes through on its way to the work: left out of "by total"
WRAPPERS = ("<frozen runpy>", "kraken/__main__.py", "kraken/cli.py", "asyncio/runners.py")


def _function(frame: str) -> str:
    """``name (file:line)`` -> ``name (file)``: samples of one function taken together."""
    name, _, where = frame.partition(" (")
    if ":" not in where:
        return frame
    return f"{name} ({where.rsplit(':', 1)[0]})"


def profile_summary(raw: Path, top: int = 12) -> str:
    """The top functions of a py-spy raw (collapsed stacks) file: own and total samples.

    "own" counts the samples where the function itself was running (for the
    event loop's ``run``: the C code of uvloop and the system calls it makes),
    "total" those where it was on the stack.
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    lines_own: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[_function(frames[-1])] += count
        lines_own[frames[-1]] += count
        for function in {_function(f) for f in frames}:
            total[function] += count
    if not samples:
        return f"{raw}: no samples"
    out = [f"{raw}: {samples} samples", "  own%  total%  function (file), by own samples"]
    for function, count in own.most_common(top):
        out.append(
            f"{100 * count / samples:6.1f} {100 * total[function] / samples:7.1f}  {function}"
        )
    out.append("  own%  total%  function (file), by total samples")
    callers = [
        (f, c)
        for f, c in total.most_common()
        if c < 0.95 * samples and not any(w in f for w in WRAPPERS)
    ]
    for function, count in callers[:top]:
        out.append(f"{100 * own[function] / samples:6.1f} {100 * count / samples:7.1f}  {function}")
    out.append("  own%  line, by own samples")
    for frame, count in lines_own.most_common(top):
        out.append(f"{100 * count / samples:6.1f}  {frame}")
    return "\n".join(out)


# -- the table -------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def ratio_columns(servers: list[str]) -> list[tuple[str, str, str]]:
    """(heading, numerator, denominator) of each ratio the table shows: us/Redis, and for
    every other server (another Kraken tree) its ratio to Redis and to us."""
    columns = []
    if "kraken" in servers and "redis" in servers:
        columns.append(("us/redis", "kraken", "redis"))
    for other in servers:
        if other in ("kraken", "redis"):
            continue
        for base in ("redis", "kraken"):
            if base in servers:
                columns.append((f"{other}/{base}", other, base))
    return columns


def table(results: dict[str, dict[str, Outcome]], servers: list[str]) -> str:
    """One row per figure: workload, figure, a column per server, the ratios
    (``ratio_columns``), which is better."""
    head = ["workload", "figure", *servers]
    ratios = ratio_columns(servers)
    if ratios:
        head += [heading for heading, _, _ in ratios] + ["better"]
    blank = [""] * (len(ratios) + 1) if ratios else []
    rows: list[list[str]] = []
    for workload, by_server in results.items():
        names: list[tuple[str, str]] = []
        for outcome in by_server.values():
            for name, _, better in outcome.figures:
                if (name, better) not in names:
                    names.append((name, better))
        for name, better in names:
            values = {
                server: next((v for n, v, _ in outcome.figures if n == name), None)
                for server, outcome in by_server.items()
            }
            row = [workload, name, *(fmt(values.get(s)) for s in servers)]
            if ratios:
                for _, top, bottom in ratios:
                    a, b = values.get(top), values.get(bottom)
                    row.append(f"{a / b:.2f}x" if a is not None and b else "-")
                row.append(better or "")
            rows.append(row)
        check = [
            "ok"
            if server in by_server and not by_server[server].errors
            else ("FAIL" if server in by_server else "-")
            for server in servers
        ]
        rows.append([workload, "correctness check", *check, *blank])
        generator = []
        for server in servers:
            outcome = by_server.get(server)
            shares = [share for _, share in outcome.generator] if outcome else []
            generator.append(f"{100 * max(shares):.0f}%" if shares else "-")
        rows.append([workload, "generator CPU % of a core", *generator, *blank])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB RAM, Python {sys.version.split()[0]}"
    )
