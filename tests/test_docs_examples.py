"""Every example of README.md and docs/*.md runs as written, from a fresh venv.

The rules (which blocks run and how, the markers, ``...`` and horizons in
expected output) are in ``tests/docs_examples.py``. The end-to-end test copies
the working tree (tracked and untracked-but-not-ignored files) to a temporary
directory, builds its ``.venv`` with the recipe ``make run`` depends on (the
only step that needs the network), then runs README.md and docs/*.md in order
inside a private network and pid namespace: the README's ``make run`` serves on
the default ports 12355/12356 there without meeting any server of this machine,
and every process the examples start ends with the namespace.

The other tests check the runner itself on small Markdown texts: that each kind
of example passes when right, and that a broken one fails naming the file, the
block's line and what differed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import docs_examples
from docs_examples import Block, DocError, Outcome, Run, match, parse, report
from kraken_testing import ROOT, ServerProcess

INSTALL_TIMEOUT = 600.0  # seconds to build the fresh venv (pip from PyPI; cached wheels help)
RUN_TIMEOUT = 300.0  # seconds for every example of every document
HERE = Path(__file__).resolve().parent


# -- the documents themselves ------------------------------------------------------------


def test_every_block_of_the_docs_is_an_example_or_says_why_not() -> None:
    kinds: dict[str, int] = {}
    for path in docs_examples.documents(ROOT):
        for block in parse((ROOT / path).read_text(), path):  # DocError names what is unclear
            kinds[block.kind] = kinds.get(block.kind, 0) + 1
    assert kinds.get("console") and kinds.get("python") and kinds.get("session"), kinds


def test_the_order_is_the_readme_then_docs_alphabetically() -> None:
    paths = docs_examples.documents(ROOT)
    assert paths[0] == "README.md"
    assert paths[1:] == sorted(paths[1:])
    assert set(paths[1:]) == {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}


# -- the end-to-end run ------------------------------------------------------------------


def private_network() -> list[str]:
    """The command prefix that runs a command in new network and pid namespaces."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs unshare(1) and ip(8) to run the examples in a private network")
    base = ["unshare", "--kill-child", "--net", "--pid", "--fork", "--mount-proc"]
    tried = []
    for prefix in ([base] if os.geteuid() == 0 else []) + [[base[0], "--map-root-user", *base[1:]]]:
        probe = subprocess.run(
            [*prefix, "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30
        )
        if probe.returncode == 0:
            return prefix
        tried.append(f"{' '.join(prefix)}: {probe.stderr.decode(errors='replace').strip()}")
    pytest.skip("cannot make a private network namespace here:\n" + "\n".join(tried))


def reader_environment(home: Path) -> dict[str, str]:
    """This environment as a new user's terminal: no venv, no make or pytest state."""
    venv_bin = (ROOT / ".venv" / "bin").resolve()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KRAKEN_", "PYTEST_", "MAKE", "VIRTUAL_ENV"))
        and key not in {"PYTHONPATH", "PYTHONHOME", "MFLAGS", "PS1", "COLUMNS", "LINES"}
    }
    env["PATH"] = os.pathsep.join(
        entry
        for entry in env.get("PATH", "").split(os.pathsep)
        if entry and Path(entry).resolve() != venv_bin
    )
    env["XDG_STATE_HOME"] = str(home / "state")  # `kraken start`'s default log, if a doc runs it
    return env


def copy_tree(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    for name in sorted(set(listed.decode().split("\0")) - {""}):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet in the index
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)


def run_ended(command: list[str], timeout: float, **options: object) -> tuple[int, str]:
    """Run ``command`` in a process group of its own, ended by its pid after ``timeout``."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **options,  # type: ignore[call-overload]
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return -1, output.decode(errors="replace") + f"\n(ended after {timeout:.0f} s)"
    return process.returncode, output.decode(errors="replace")


@pytest.mark.timeout(INSTALL_TIMEOUT + RUN_TIMEOUT + 60)
def test_every_example_of_the_readme_and_docs_runs_from_a_fresh_venv() -> None:
    namespace = private_network()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kraken-docs-") as directory:
        tree, home = Path(directory, "kraken"), Path(directory, "home")
        tree.mkdir()
        home.mkdir()
        copy_tree(tree)
        env = reader_environment(home)
        # `make run` = this venv recipe + `kraken run`: the one step that needs the network
        status, output = run_ended(["make", ".venv/.installed"], INSTALL_TIMEOUT, cwd=tree, env=env)
        assert status == 0, f"`make run`'s install step failed:\n{output}"
        installed = time.monotonic()
        report_file = Path(directory, "outcomes.json")
        status, log = run_ended(
            [
                *namespace,
                "sh",
                "-c",
                'ip link set lo up && exec "$@"',
                "sh",
                sys.executable,
                str(HERE / "docs_examples.py"),
                "--root",
                str(tree),
                "--report",
                str(report_file),
            ],
            RUN_TIMEOUT,
            cwd=tree,
            env=env,
        )
        assert status == 0 and report_file.exists(), f"the runner failed:\n{log}"
        outcomes = [Outcome(**item) for item in json.loads(report_file.read_text())]
    ran = [o for o in outcomes if o.status == "ran"]
    skipped = [f"{o.where}: {o.detail}" for o in outcomes if o.status == "skipped"]
    print(
        f"\n{len(ran)} examples ran, {len(skipped)} skipped; venv {installed - started:.0f} s, "
        f"examples {time.monotonic() - installed:.0f} s\n" + "\n".join(skipped)
    )
    assert not report(outcomes), f"{report(outcomes)}\n\nthe run:\n{log}"
    assert len(ran) >= 20, log


# -- the runner on small texts -----------------------------------------------------------

GUIDE = """\
# A guide

```sh
mkdir -p sub && cd sub
export GREETING=hello
```

<!-- example: background until "ready" -->
```sh
echo ready
sleep 60
```

```console
$ echo "$GREETING from $(basename "$PWD")"
hello from sub
$ echo "pid $$"
pid ...
$ (sleep 0.3; echo late) &
late
```

<!-- example: file notes.txt -->
```text
some notes
```

```console
$ cat notes.txt
some notes
```

```python
import os

seen = os.environ["GREETING"]
```

<!-- example: interrupt -->
```python
import time

while True:
    time.sleep(0.05)
```

```python
assert seen == "hello", seen
```

<!-- example: interrupt -->
```console
$ sh -c 'echo started; sleep 60'
started
```

<!-- example: session one -->
```
version
VERSION ...
get horizon
VALUE horizon 0 17
1795853026.609838
END
```

```
A→ set subscribe 0 0 4\\r\\n
A→ news\\r\\n
A← STORED\\r\\n

B→ set publish 0 0 18\\r\\nMESSAGE news 2\\r\\nhi\\r\\n
B← STORED\\r\\n
```

<!-- example: close A -->
```
A→ set retro_subscribe 0 0 23\\r\\n1795853026.609838\\r\\nnews\\r\\n
A← STORED\\r\\n
A→ get messages\\r\\n
A← VALUE messages 0 18\\r\\nMESSAGE news 2\\r\\nhi\\r\\nEND\\r\\n
```

<!-- example: skip (shows what is not run) -->
```sh
exit 1
```
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    running = ServerProcess()
    yield running
    running.stop()


def run_guide(text: str, directory: Path, server: ServerProcess) -> list[Outcome]:
    (directory / "guide.md").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRAKEN_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["KRAKEN_TCP_SERVER_PORT"] = str(server.port)  # for `kraken connect`
    return Run(directory, env, address=("127.0.0.1", server.port)).documents(["guide.md"])


def fence_line(text: str, inside: str) -> int:
    """The line of the opening fence of the block holding ``inside``."""
    lines = text.splitlines()
    found = next(i for i, line in enumerate(lines) if inside in line)
    return next(i for i in range(found, -1, -1) if lines[i].startswith("```")) + 1


@pytest.fixture(autouse=True)
def quick_interrupts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docs_examples, "INTERRUPT_AFTER", 0.3)
    monkeypatch.setattr(docs_examples, "OUTPUT_WAIT", 1.0)
    monkeypatch.setattr(docs_examples, "REPLY_WAIT", 1.0)


def test_a_right_guide_runs_every_kind_of_example(tmp_path: Path, server: ServerProcess) -> None:
    outcomes = run_guide(GUIDE, tmp_path, server)
    assert not report(outcomes), report(outcomes)
    assert [o.status for o in outcomes] == [
        *["ran"] * 3,
        "shown",
        *["ran"] * 8,
        "skipped",
    ], outcomes
    assert (tmp_path / "sub" / "notes.txt").read_text() == "some notes\n"
    assert outcomes[-1].detail == "(shows what is not run)"


BROKEN = [
    # (what, replace this, with this, a line of the failing block, the failure says)
    ("wrong output", "hello from sub\n", "hello from elsewhere\n", '$ echo "$G', "+hello from sub"),
    ("misspelled command", "$ cat notes", "$ cta notes", "$ cta", "cta: command not found"),
    ("failing sh", "mkdir -p sub && cd sub", "cd nowhere", "cd nowhere", "`cd nowhere` exited"),
    ("silent failure", "$ (sleep 0.3; echo late) &\nlate", "$ false", "$ false", "`false` exited"),
    ("python error", 'seen == "hello"', 'seen == "bye"', "assert", "AssertionError: hello"),
    ("background exits", "echo ready\nsleep 60\n", "exit 3\n", "exit 3", "status 3, without"),
    ("session reply", "VALUE horizon 0 17", "VALUE horizon 0 18", "version", "+VALUE horizon 0 17"),
    ("wire reply", "A← STORED\\r\\n\n\nB", "A← NOTED\\r\\n\n\nB", "A← NOTED", "+STORED"),
    ("extra reply", "B← STORED\\r\\n\n", "", "B→ set", "more than the document shows: 'STORED"),
    ("interrupted output", "started\n```", "begun\n```", "echo started", "+started"),
]


@pytest.mark.parametrize(
    ("what", "old", "new", "inside", "says"), BROKEN, ids=[b[0] for b in BROKEN]
)
def test_a_broken_example_fails_naming_the_file_the_block_and_the_difference(
    tmp_path: Path, server: ServerProcess, what: str, old: str, new: str, inside: str, says: str
) -> None:
    assert GUIDE.count(old) == 1, old
    text = GUIDE.replace(old, new)
    failures = report(run_guide(text, tmp_path, server))
    assert failures.startswith(f"guide.md:{fence_line(text, inside)} "), failures
    assert says in failures, failures


def test_the_failure_of_a_line_names_that_line(tmp_path: Path, server: ServerProcess) -> None:
    text = GUIDE.replace("$ cat notes.txt", "$ cta notes.txt")
    line = text.splitlines().index("$ cta notes.txt") + 1
    assert f"line {line}: `cta notes.txt`" in report(run_guide(text, tmp_path, server))


def block(text: str) -> Block:
    (found,) = parse(text, "x.md")
    return found


def test_markers_and_languages_classify_blocks() -> None:
    assert block("```sh\nls\n```\n").kind == "sh"
    assert block("```console\n$ ls\n```\n").kind == "console"
    assert block("```python\npass\n```\n").kind == "python"
    assert block("```toml\na = 1\n```\n").kind == "shown"
    assert block("```\nA→ version\\r\\n\n← VERSION\\r\\n\n```\n").kind == "wire"
    session = block("text\n\n<!-- example: session first -->\n```\nversion\n```\n")
    assert (session.kind, session.line, session.marker) == (
        "session",
        4,
        docs_examples.Marker("session", "first", 3),
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("```\nplain words\n```\n", "x.md:1: a block without a language"),
        ("<!-- example: skip -->\n```sh\nls\n```\n", "x.md:1: `example: skip` needs its reason"),
        ("<!-- example: skip () -->\n```sh\nls\n```\n", "needs its reason"),
        ("<!-- example: later -->\n```sh\nls\n```\n", "unknown example marker 'later'"),
        ("<!-- example: background -->\n```python\n1\n```\n", "does not apply to a python"),
        ("<!-- example: session a -->\n```sh\nls\n```\n", "does not apply to a sh block"),
        ("<!-- example: skip (no) -->\n\ntext\n", "x.md:1: an example marker not followed"),
        ("```sh\nls\n", "x.md:1: a block that is never closed"),
        ("```console\nout\n$ ls\n```\n", "x.md:2: console output before any"),
    ],
)
def test_unclear_markdown_is_refused_naming_the_line(text: str, says: str) -> None:
    with pytest.raises(DocError) as refused:
        parse(text, "x.md")
    assert says in str(refused.value)


def test_expected_output_rules() -> None:
    captures: dict[str, str] = {}
    assert match("pid ...\n", "pid 4242\n", captures, ellipsis=True)
    assert match("a\n...\nz\n", "a\nb\nc\nz\n", captures, ellipsis=True)
    assert not match("pid ...\n", "pid 4242\n", captures, ellipsis=False)
    assert not match("a\nb\n", "a\nc\n", captures, ellipsis=True)
    # a horizon matches any horizon, then stands for the one received
    assert match("at 1795853026.609838\n", "at 1796416622.673939\n", captures, ellipsis=True)
    assert captures == {"1795853026.609838": "1796416622.673939"}
    assert not match("1795853026.609838\n", "1796416622.000001\n", captures, ellipsis=False)
    assert docs_examples.substitute("--retro 1795853026.609838", captures) == (
        "--retro 1796416622.673939"
    )
    # one literal twice in one output is one horizon
    assert not match("1795000000.000001 1795000000.000001", "1795000000.1 2", {}, False)
    assert not match(
        "1795000000.000001 1795000000.000001", "1796000000.000001 1796000000.000002", {}, False
    )
    assert docs_examples.normalize("a  \nb\n\n\n") == "a\nb\n"


def test_session_transcripts_split_typed_lines_from_replies_by_the_protocol() -> None:
    steps = docs_examples.session_steps(
        block(
            "<!-- example: session a -->\n```\n"
            "set publish 0 0 27\nMESSAGE topicA 9\nhi there!\nSTORED\n"
            "get messages\nVALUE messages 0 16\nMESSAGE t 3\nget\nEND\n```\n"
        )
    )
    assert steps == [
        (3, ["set publish 0 0 27", "MESSAGE topicA 9", "hi there!"], ["STORED"]),
        (7, ["get messages"], ["VALUE messages 0 16", "MESSAGE t 3", "get", "END"]),
    ]
