"""Coverage-guided fuzzing of kraken.wire (tests/fuzz/README.md).

    python tests/fuzz/run.py --seconds 600 --merge   fuzz, then keep the new inputs
    python tests/fuzz/run.py --seconds 60            fuzz (what `make test` runs)
    python tests/fuzz/run.py --replay FILE...        check inputs, and say what they are
    python tests/fuzz/run.py --save NAME TARGET      a regression input from stdin
    python tests/fuzz/run.py --coverage              what the saved inputs reach

The fuzzer is atheris (libFuzzer driving instrumented Python), run in a child
process: libFuzzer owns the process it runs in and exits it. It starts from
corpus/ and regressions/, writes the inputs it finds to a temporary directory
(``--merge`` adds to corpus/ those that reach new code, minimised), and an input
that fails ``harness.check`` to regressions/crash-<sha1>, then stops with status 1.

Where atheris does not install (it ships wheels for Linux x86-64 and CPython
3.11-3.13 only, and building it needs clang with libFuzzer), a random mutator
over the same corpus runs instead, without coverage feedback, and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
REGRESSIONS = HERE / "regressions"
DICTIONARY = HERE / "wire.dict"
MAX_LEN = 8192  # bytes of one input: past a line's 8192 bytes and a topic's 250

sys.path.insert(0, str(HERE))


def saved_inputs() -> list[Path]:
    return sorted(p for d in (REGRESSIONS, CORPUS) for p in d.iterdir() if p.is_file())


# -- atheris, in the child --------------------------------------------------------------


def libfuzzer_child(argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["kraken"]):
        import kraken.wire.encode
        import kraken.wire.parser
        import kraken.wire.replies  # noqa: F401
    import harness  # after: it imports the instrumented modules

    # libFuzzer runs its first argument as a shell command for -merge=1: this child
    itself = shlex.join([sys.executable, str(Path(__file__)), "--libfuzzer-child"])
    atheris.Setup([itself, *argv], harness.check)
    atheris.Fuzz()


def libfuzzer(args: list[str]) -> int:
    command = [sys.executable, str(Path(__file__)), "--libfuzzer-child", *args]
    return subprocess.run(command, check=False).returncode


def fuzz_with_atheris(seconds: int, merge: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="kraken-fuzz-"))
    try:
        status = libfuzzer(
            [
                str(work),  # new inputs go to the first directory
                str(CORPUS),
                str(REGRESSIONS),
                f"-max_total_time={seconds}",
                f"-max_len={MAX_LEN}",
                f"-dict={DICTIONARY}",
                f"-artifact_prefix={REGRESSIONS}/",
                "-timeout=10",  # seconds one input may take: a hang is a bug too
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
            ]
        )
        if status != 0:
            print(f"fuzz: failed (status {status}); the input is in {REGRESSIONS}/ (see README)")
            return status
        found = len(list(work.iterdir()))
        print(f"fuzz: {seconds} s, no failure; {found} new inputs")
        if merge and found:
            before = len(list(CORPUS.iterdir()))
            status = libfuzzer(["-merge=1", f"-max_len={MAX_LEN}", str(CORPUS), str(work)])
            added = len(list(CORPUS.iterdir())) - before
            print(f"fuzz: {added} inputs reaching new code added to tests/fuzz/corpus/")
        return status
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- without atheris ------------------------------------------------------------------------


def dictionary_tokens() -> list[bytes]:
    tokens = []
    for line in DICTIONARY.read_text().splitlines():
        if line.startswith('"'):
            tokens.append(line[1:-1].encode().decode("unicode_escape").encode("latin-1"))
    return tokens


def mutate(data: bytes, rng: random.Random, tokens: list[bytes], corpus: list[bytes]) -> bytes:
    """A few random edits of ``data``: libFuzzer's usual ones, in plain Python."""
    out = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        at = rng.randrange(len(out) + 1)
        match rng.randrange(7):
            case 0 if out:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            case 1:
                out[at:at] = bytes([rng.randrange(256)])
            case 2 if out:
                del out[at : at + rng.randrange(1, 9)]
            case 3:
                out[at:at] = rng.choice(tokens)
            case 4 if out:
                start = rng.randrange(len(out))
                out[at:at] = out[start : start + rng.randrange(1, 65)] * rng.randrange(1, 5)
            case 5:
                other = rng.choice(corpus)
                out[at:] = other[rng.randrange(len(other) + 1) :]
            case _ if out:
                out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out[:MAX_LEN])


def fuzz_without_coverage(seconds: float, why: str, seed: int | None = None) -> int:
    import harness

    print(f"fuzz: atheris is not available ({why}); random mutation without coverage feedback")
    rng = random.Random(seed)
    corpus = [p.read_bytes() for p in saved_inputs()] or [b"\x00\x00version\r\n"]
    tokens = dictionary_tokens()
    deadline = time.monotonic() + seconds
    runs = 0
    while time.monotonic() < deadline:
        data = mutate(rng.choice(corpus), rng, tokens, corpus)
        runs += 1
        try:
            harness.check(data)
        except Exception:
            path = REGRESSIONS / f"crash-{hashlib.sha1(data).hexdigest()}"
            path.write_bytes(data)
            print(f"fuzz: {harness.describe(data)}\nfuzz: failed after {runs} runs: {path}")
            raise
    print(f"fuzz: {seconds:g} s, {runs} runs, no failure")
    return 0


# -- replay, save, coverage -------------------------------------------------------------------


def replay(paths: list[Path]) -> int:
    import harness

    failed = 0
    for path in paths:
        data = path.read_bytes()
        try:
            harness.check(data)
            verdict = "ok"
        except Exception as error:
            failed += 1
            verdict = f"FAILS: {type(error).__name__}: {error}"
        print(f"{path.name}: {harness.describe(data)}\n  {verdict}")
    return 1 if failed else 0


def save(name: str, target: str, options: list[str]) -> int:
    import harness

    payload = sys.stdin.buffer.read()
    data = harness.make_input(
        target,
        payload,
        limits=int(options[0]) if options else 0,
        bytewise="bytewise" in options,
        unique="unique" in options,
    )
    path = REGRESSIONS / name
    if path.exists():
        print(f"{path} exists: choose another name")
        return 2
    path.write_bytes(data)
    return replay([path])


def coverage_report() -> int:
    try:
        import coverage
    except ImportError:
        print("coverage: not installed (make test installs it)")
        return 2
    cov = coverage.Coverage(branch=True, include=["*/kraken/wire/*"], data_file=None)
    cov.start()
    import harness  # measured from its first import of kraken.wire

    for path in saved_inputs():
        try:
            harness.check(path.read_bytes())
        except Exception as error:
            print(f"{path.name}: {type(error).__name__}: {error}")
    cov.stop()
    return 0 if cov.report(show_missing=True) >= 0 else 1


def main() -> int:
    if sys.argv[1:2] == ["--libfuzzer-child"]:
        libfuzzer_child(sys.argv[2:])
        return 0  # atheris.Fuzz() exits the process itself
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 600)))
    parser.add_argument("--merge", action="store_true", help="add new coverage to corpus/")
    parser.add_argument("--no-atheris", action="store_true", help="the random mutator only")
    parser.add_argument("--replay", nargs="*", type=Path, metavar="FILE")
    parser.add_argument("--save", nargs="+", metavar=("NAME", "TARGET"))
    parser.add_argument("--coverage", action="store_true")
    args = parser.parse_args()
    if args.replay is not None:
        return replay(args.replay or saved_inputs())
    if args.save:
        if len(args.save) < 2:
            parser.error("--save NAME TARGET [LIMITS] [bytewise] [unique]")
        return save(args.save[0], args.save[1], args.save[2:])
    if args.coverage:
        return coverage_report()
    why = "--no-atheris"
    if not args.no_atheris:
        try:
            import atheris  # noqa: F401
        except ImportError as error:
            why = str(error)
        else:
            return fuzz_with_atheris(args.seconds, args.merge)
    return fuzz_without_coverage(args.seconds, why)


if __name__ == "__main__":
    sys.exit(main())
