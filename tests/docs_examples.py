"""Run the examples of README.md and docs/*.md in order, as a reader would.

``tests/test_docs_examples.py`` runs this module inside a private network
namespace over a fresh copy of the tree; its unit tests drive the same code on
small Markdown strings. Standard library only: the Python examples run in the
venv the README builds, through this module too (``python_driver``).

What is an example
------------------

A fenced block's language says what it is:

- ```` ```sh ```` (also ``bash``, ``shell``): a script, sourced in the document's
  shell; it must succeed (it stops at its first failing command, as ``set -e``).
- ```` ```console ````: ``$ `` commands, each followed by the output a terminal
  shows (stdout and stderr together). Each command runs in the document's shell;
  its output is awaited, up to ``OUTPUT_WAIT`` seconds, before the next command
  runs (a reader waits to see it too: output of a job started with ``&`` counts).
  A command shown without output must exit 0.
- ```` ```python ````: executed in the document's namespace, by the ``python``
  that the document's shell would run (the venv's, once activated).
- no language: a protocol transcript. Either arrow lines, as in docs/protocol.md
  (``A→ set ...\\r\\n`` sends those exact bytes on connection ``A``, ``A← ...``
  is what must arrive; no name is one unnamed connection; ``\\r \\n \\t \\\\
  \\xNN`` are escapes), or, with a ``session NAME`` marker, what a reader types
  into ``kraken connect`` (terminal NAME) and what it prints, as in the README.
  Lines that start with ``set``/``get``/``version``/``quit`` are typed (with a
  ``set``'s data lines); every other line is a reply (with a ``VALUE``'s data
  lines). Replies are compared byte for byte, as ``kraken connect`` prints them
  (each CRLF as a newline).
- any other language (``text``, ``toml``, ``erlang`` ...): shown, not run.

Rules for expected output
-------------------------

- ``console`` output is compared line by line without trailing whitespace, and
  trailing blank lines do not count; transcripts are compared byte for byte.
- In ``console`` and ``session`` output, ``...`` matches any text, newlines
  included (doctest's ELLIPSIS): use it for pids, times, counters. Never in arrow
  transcripts, whose bytes are exact.
- Everywhere, a horizon (ten digits, a dot, six digits) in expected output
  matches any horizon, and is remembered: later in the same document that same
  literal, in output, a command, a request or Python source, stands for the
  horizon actually received.

Markers
-------

An HTML comment alone on its line before a block (blank lines between are
fine), which readers of the rendered Markdown do not see:

- ``<!-- example: skip (why) -->``: not run; the reason is required.
- ``<!-- example: background -->`` (``sh`` only), optionally ``until "TEXT"``:
  runs in a terminal of its own (its output apart) for the rest of the run; the
  next block runs once TEXT has appeared in its output.
- ``<!-- example: interrupt -->`` (``console``, ``python``): runs until Ctrl-C. A
  ``console`` block's last command is interrupted (SIGINT) once its shown output
  has appeared; a ``python`` block after ``INTERRUPT_AFTER`` seconds; again each
  second until it ends, as a reader would. Ending by that interrupt is success.
- ``<!-- example: session NAME -->``: a transcript typed into ``kraken connect``
  in terminal NAME (started on first use, from the document's shell).
- ``<!-- example: close NAME -->`` (arrow transcripts): connection NAME is closed
  before this block; its next line opens a new one.
- ``<!-- example: file PATH -->`` (a block that is not run): its text is written
  to PATH, relative to the shell's directory, for the examples after it.

Order and state
---------------

README.md first, then docs/*.md in alphabetical order. Each document has one
shell, one Python namespace and its own connections; the README's shell starts
in the tree's root, every later document's where the README's ended (the venv
activated). A document stops at its first failure. Background blocks, such as
the README's ``make run``, last until the whole run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMAND_TIMEOUT = 120.0  # seconds one command, sh block or Python block may take
OUTPUT_WAIT = 10.0  # seconds shown output may take to appear after its command
BACKGROUND_WAIT = 120.0  # seconds a background block may take to print its "until" text
INTERRUPT_AFTER = 2.0  # seconds a python block marked `interrupt` runs before Ctrl-C
REPLY_WAIT = 5.0  # seconds a transcript's replies may take
QUIET_GRACE = 0.1  # seconds without unexpected bytes after a transcript block

RUN_LANGUAGES = {"sh": "sh", "bash": "sh", "shell": "sh", "console": "console", "python": "python"}
MARKER_KINDS = ("skip", "background", "interrupt", "session", "close", "file")
MARKER = re.compile(r"<!--\s*example:(?P<body>.*?)-->\s*$")
FENCE = re.compile(r"^```(?P<info>[^`]*)$")
ARROW = re.compile(r"^(?P<name>[A-Za-z0-9_]*)(?P<way>[→←]) ?(?P<text>.*)$")
HORIZON = r"(?<![0-9.])[0-9]{10}\.[0-9]{6}(?![0-9])"
TOKENS = re.compile(rf"(?P<horizon>{HORIZON})|(?P<ellipsis>\.\.\.)")
HORIZONS = re.compile(HORIZON)
REQUEST = re.compile(r"^(set|get|version|quit)( |$)")
VALUE = re.compile(r"^VALUE \S+ \S+ ([0-9]+)$")
ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|(.))")
ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}


# -- reading the Markdown ---------------------------------------------------------------


class DocError(Exception):
    """A block or marker the runner cannot classify: the Markdown must be fixed."""


@dataclasses.dataclass(frozen=True)
class Marker:
    kind: str
    arg: str
    line: int


@dataclasses.dataclass(frozen=True)
class Block:
    path: str
    line: int  # of the opening fence, 1-based
    language: str
    text: str  # the lines between the fences, each ending in "\n"
    marker: Marker | None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def kind(self) -> str:
        """sh, console, python, wire, session or shown (not run)."""
        if self.marker and self.marker.kind == "session" and not self.language:
            return "session"
        if self.language in RUN_LANGUAGES:
            return RUN_LANGUAGES[self.language]
        if not self.language and is_arrow_transcript(self.text):
            return "wire"
        return "shown"


def is_arrow_transcript(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and all(ARROW.match(line) for line in lines)


def parse_marker(body: str, path: str, line: int) -> Marker:
    kind, _, arg = body.strip().partition(" ")
    arg = arg.strip()
    where = f"{path}:{line}"
    if kind not in MARKER_KINDS:
        raise DocError(
            f"{where}: unknown example marker {kind!r} (one of {', '.join(MARKER_KINDS)})"
        )
    if kind == "skip" and not re.fullmatch(r"\(.*\S.*\)", arg):
        raise DocError(f"{where}: `example: skip` needs its reason: `skip (why)`")
    if kind == "background" and arg and not re.fullmatch(r'until ".+"', arg):
        raise DocError(f'{where}: `example: background` takes nothing or `until "TEXT"`')
    if kind == "interrupt" and arg:
        raise DocError(f"{where}: `example: interrupt` takes no argument")
    if kind in ("session", "close") and not re.fullmatch(r"[A-Za-z0-9_]+", arg):
        raise DocError(f"{where}: `example: {kind}` needs a name: `{kind} NAME`")
    if kind == "file" and not arg:
        raise DocError(f"{where}: `example: file` needs a path: `file PATH`")
    return Marker(kind, arg, line)


def check_block(block: Block) -> None:
    marker, kind = block.marker, block.kind
    if kind == "console":
        console_steps(block)  # output before the first command is refused
    if marker is None:
        if kind == "shown" and not block.language:
            raise DocError(
                f"{block.where}: a block without a language that is not an arrow transcript: "
                "give it a language (```text when it is not an example) or an example marker"
            )
        return
    allowed = {
        "skip": True,
        "background": kind == "sh",
        "interrupt": kind in ("console", "python"),
        "session": not block.language,
        "close": kind == "wire",
        "file": kind == "shown",
    }[marker.kind]
    if not allowed:
        raise DocError(
            f"{block.where}: `example: {marker.kind}` does not apply to a {kind} block "
            f"(```{block.language})"
        )
    if marker.kind == "interrupt" and kind == "console" and not console_steps(block):
        raise DocError(f"{block.where}: an interrupted console block needs a `$ ` command")


def parse(text: str, path: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with their markers; DocError if unclear."""
    blocks: list[Block] = []
    lines = text.splitlines()
    marker: Marker | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        found = MARKER.match(line.strip()) if line.lstrip().startswith("<!--") else None
        if found:
            if marker is not None:
                raise DocError(f"{path}:{marker.line}: an example marker not followed by a block")
            marker = parse_marker(found.group("body"), path, i + 1)
        elif "<!--" in line and "example:" in line:
            raise DocError(f"{path}:{i + 1}: an example marker must be alone on its line")
        elif fence := FENCE.match(line):
            language = fence.group("info").strip().split(" ")[0]
            start = i
            i += 1
            while i < len(lines) and lines[i].rstrip() != "```":
                i += 1
            if i == len(lines):
                raise DocError(f"{path}:{start + 1}: a block that is never closed")
            body = "".join(f"{content}\n" for content in lines[start + 1 : i])
            block = Block(path, start + 1, language, body, marker)
            check_block(block)
            blocks.append(block)
            marker = None
        elif line.strip() and marker is not None:
            raise DocError(f"{path}:{marker.line}: an example marker not followed by a block")
        i += 1
    if marker is not None:
        raise DocError(f"{path}:{marker.line}: an example marker not followed by a block")
    return blocks


def documents(root: Path) -> list[str]:
    """README.md, then docs/*.md in alphabetical order."""
    return ["README.md", *sorted(str(p.relative_to(root)) for p in (root / "docs").glob("*.md"))]


# -- expected output ----------------------------------------------------------------------


def normalize(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "".join(f"{line}\n" for line in lines)


def expected_pattern(
    expected: str, captures: dict[str, str], ellipsis: bool
) -> tuple[re.Pattern[str], dict[str, str]]:
    """A regex for ``expected``, and its new horizon groups (group name -> literal)."""
    parts: list[str] = []
    groups: dict[str, str] = {}  # literal -> group name
    position = 0
    for token in TOKENS.finditer(expected):
        if token.group("ellipsis") and not ellipsis:
            continue
        parts.append(re.escape(expected[position : token.start()]))
        literal = token.group()
        if token.group("ellipsis"):
            parts.append(".*?")
        elif literal in captures:
            parts.append(re.escape(captures[literal]))
        elif literal in groups:
            parts.append(f"(?P={groups[literal]})")
        else:
            groups[literal] = f"h{len(groups)}"
            parts.append(f"(?P<{groups[literal]}>{HORIZON})")
        position = token.end()
    parts.append(re.escape(expected[position:]))
    return re.compile("".join(parts), re.S), {name: lit for lit, name in groups.items()}


def match(expected: str, actual: str, captures: dict[str, str], ellipsis: bool) -> bool:
    """Whether ``actual`` is what ``expected`` shows; records the horizons it captured."""
    pattern, groups = expected_pattern(expected, captures, ellipsis)
    found = pattern.fullmatch(actual)
    if found is None:
        return False
    for name, literal in groups.items():
        captures[literal] = found.group(name)
    return True


def substitute(text: str, captures: dict[str, str]) -> str:
    """``text`` with every captured horizon replaced by the one actually received."""
    return HORIZONS.sub(lambda m: captures.get(m.group(), m.group()), text)


def difference(expected: str, actual: str, where: str) -> str:
    diff = difflib.unified_diff(
        expected.splitlines(),
        actual.splitlines(),
        f"expected ({where})",
        "actual",
        lineterm="",
    )
    return "\n".join(diff) or f"expected {expected!r}, got {actual!r}"


def console_steps(block: Block) -> list[tuple[int, str, str]]:
    """(line, command, expected output) for each ``$ `` command of a console block."""
    steps: list[tuple[int, str, str]] = []
    for number, line in enumerate(block.text.splitlines(), block.line + 1):
        if line.startswith("$ "):
            steps.append((number, line[2:], ""))
        elif steps:
            steps[-1] = (steps[-1][0], steps[-1][1], steps[-1][2] + line + "\n")
        elif line.strip():
            raise DocError(f"{block.path}:{number}: console output before any `$ ` command")
    return steps


def unescape(text: str) -> bytes:
    """An arrow line's text as bytes: \\r \\n \\t \\\\ \\xNN, everything else UTF-8."""
    out = bytearray()
    position = 0
    for escape in ESCAPE.finditer(text):
        out += text[position : escape.start()].encode()
        if escape.group(1):
            out.append(int(escape.group(1), 16))
        else:
            out += ESCAPES.get(escape.group(2), escape.group().encode())
        position = escape.end()
    out += text[position:].encode()
    return bytes(out)


def session_steps(block: Block) -> list[tuple[int, list[str], list[str]]]:
    """(line, typed lines, reply lines) for each exchange of a ``session`` block."""
    lines = block.text.splitlines()
    steps: list[tuple[int, list[str], list[str]]] = []
    i = 0

    def data(count: int) -> list[str]:  # the lines of a data block of `count` bytes
        nonlocal i
        taken: list[str] = []
        size = -2
        while i < len(lines) and size < count:
            size += 2 + len(lines[i].encode())
            taken.append(lines[i])
            i += 1
        return taken

    while i < len(lines):
        start = block.line + 1 + i
        typed: list[str] = []
        replies: list[str] = []
        while i < len(lines) and REQUEST.match(lines[i]):
            line = lines[i]
            i += 1
            typed.append(line)
            fields = line.split()
            if fields[0] == "set" and len(fields) >= 5:
                size = fields[-2] if fields[-1] == "noreply" else fields[-1]
                typed += data(int(size)) if size.isdigit() else []
        while i < len(lines) and not REQUEST.match(lines[i]):
            line = lines[i]
            i += 1
            replies.append(line)
            if value := VALUE.match(line):
                replies += data(int(value.group(1)))
        steps.append((start, typed, replies))
    return steps


def wire_steps(block: Block) -> list[tuple[int, str, str, list[str]]]:
    """(line, connection, way, texts) for each run of arrow lines of one connection and way."""
    steps: list[tuple[int, str, str, list[str]]] = []
    for number, line in enumerate(block.text.splitlines(), block.line + 1):
        arrow = ARROW.match(line)
        if not arrow:
            continue
        name, way = arrow.group("name"), arrow.group("way")
        if steps and steps[-1][1:3] == (name, way):
            steps[-1][3].append(arrow.group("text"))
        else:
            steps.append((number, name, way, [arrow.group("text")]))
    return steps


# -- running ------------------------------------------------------------------------------


class Failed(Exception):
    """An example did not do what its document shows."""


@dataclasses.dataclass
class Outcome:
    where: str
    kind: str
    status: str  # ran, skipped, shown, failed, not reached
    seconds: float = 0.0
    detail: str = ""


class Output:
    """Bytes arriving from a pipe or socket, gathered by a thread, waited on by conditions."""

    def __init__(self, read: Callable[[], bytes]) -> None:
        self.data = bytearray()
        self.closed = False
        self.changed = threading.Condition()
        threading.Thread(target=self._pump, args=(read,), daemon=True).start()

    def _pump(self, read: Callable[[], bytes]) -> None:
        while True:
            try:
                chunk = read()
            except (OSError, ValueError):
                chunk = b""
            with self.changed:
                if chunk:
                    self.data += chunk
                else:
                    self.closed = True
                self.changed.notify_all()
            if not chunk:
                return

    def wait(self, condition: Callable[[bytes, bool], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition(bytes(self.data), self.closed):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
            return True

    def __len__(self) -> int:
        with self.changed:
            return len(self.data)

    def text(self, start: int = 0, end: int | None = None) -> str:
        with self.changed:
            return bytes(self.data[start:end]).decode(errors="replace")


def pipe_reader(stream: Any) -> Callable[[], bytes]:
    return functools.partial(os.read, stream.fileno(), 65536)


def end_process(process: subprocess.Popen[bytes]) -> None:
    """End a process we started in a session of its own, and its whole process group, by
    its pid: SIGTERM, then SIGKILL for whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(3.0)


def tail(text: str, lines: int = 30) -> str:
    kept = text.rstrip("\n").split("\n")[-lines:]
    return "\n".join(f"    | {line}" for line in kept)


class Shell:
    """A document's shell: bash reading commands from a pipe, output as a terminal shows it."""

    def __init__(self, cwd: str, env: dict[str, str], scratch: Path) -> None:
        self.scratch = scratch
        self.process = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: Ctrl-C is a SIGINT to it
        )
        assert self.process.stdout is not None
        self.output = Output(pipe_reader(self.process.stdout))
        self.position = 0  # output up to here belongs to earlier commands
        self._send("trap : INT\n")  # Ctrl-C ends the foreground command, not the shell

    def _send(self, text: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(text.encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            raise Failed(f"the shell has exited:\n{tail(self.output.text())}") from None

    def start(self, script: str) -> str:
        """Send ``script``; returns the token that `finished` waits for."""
        token = f"__kraken_docs_{uuid.uuid4().hex}__"
        self._send(f"{{ {script}\n}} </dev/null\nprintf '\\n{token} %d\\n' $?\n")
        return token

    def interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)

    def finished(self, token: str, timeout: float) -> tuple[int, int, int] | None:
        """(end of its output, end of the status line, status), or None if still running."""
        marker = f"\n{token} ".encode()

        def done(data: bytes, closed: bool) -> bool:
            return closed or re.search(re.escape(marker) + rb"\d+\n", data) is not None

        self.output.wait(done, timeout)
        with self.output.changed:
            found = re.search(re.escape(marker) + rb"(\d+)\n", bytes(self.output.data))
        if found is None:
            if self.output.closed:
                raise Failed(f"the shell has exited:\n{tail(self.output.text(self.position))}")
            return None
        return found.start(), found.end(), int(found.group(1))

    def state(self) -> tuple[str, dict[str, str]]:
        """The shell's directory and exported environment, as a new terminal would get them."""
        env_file, cwd_file = self.scratch / "env", self.scratch / "cwd"
        token = self.start(f"env -0 > {env_file}; pwd > {cwd_file}")
        done = self.finished(token, COMMAND_TIMEOUT)
        if done is None:
            raise Failed("the shell did not answer")
        self.position = done[1]
        pairs = env_file.read_bytes().decode().split("\0")
        env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        return cwd_file.read_text().strip(), env

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        end_process(self.process)


class Terminal:
    """A process with its own output: a background block, or ``kraken connect``."""

    def __init__(
        self, argv: list[str], cwd: str, env: dict[str, str], stdin: int = subprocess.PIPE
    ) -> None:
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.output = Output(pipe_reader(self.process.stdout))
        self.errors = Output(pipe_reader(self.process.stderr))
        self.position = 0

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(text.encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            raise Failed(f"it has exited:\n{tail(self.everything())}") from None

    def everything(self) -> str:
        return self.errors.text() + self.output.text()

    def close(self) -> None:
        """End of input (Ctrl-D) for a terminal that reads it, then the end of its group."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5.0)
        end_process(self.process)


class Connection:
    """A raw TCP connection of an arrow transcript."""

    def __init__(self, address: tuple[str, int]) -> None:
        try:
            self.socket = socket.create_connection(address, timeout=REPLY_WAIT)
        except OSError as error:
            raise Failed(f"cannot connect to {address[0]}:{address[1]}: {error}") from None
        self.socket.settimeout(None)
        self.output = Output(functools.partial(self.socket.recv, 65536))
        self.position = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()


class PythonNamespace:
    """The document's Python: ``python_driver`` in the python the shell would run."""

    def __init__(self, cwd: str, env: dict[str, str]) -> None:
        python = shutil.which("python", path=env.get("PATH", ""))
        if python is None:
            raise Failed("`python` is not on the PATH of the document's shell")
        commands_read, self.commands = os.pipe()
        self.results, results_write = os.pipe()
        here = str(Path(__file__).resolve().parent)
        bootstrap = (
            f"import sys; sys.path.insert(0, {here!r}); import docs_examples; "
            f"sys.path.remove({here!r}); docs_examples.python_driver({commands_read}, "
            f"{results_write})"
        )
        self.process = subprocess.Popen(
            [python, "-c", bootstrap],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(commands_read, results_write),
            start_new_session=True,
        )
        os.close(commands_read)
        os.close(results_write)
        assert self.process.stdout is not None
        self.output = Output(pipe_reader(self.process.stdout))
        self.answers = Output(functools.partial(os.read, self.results, 65536))

    def run(self, block: Block, source: str, interrupt: float | None) -> dict[str, Any]:
        request = {"path": block.path, "line": block.line + 1, "source": source}
        request["interrupt"] = interrupt
        seen = len(self.answers)
        try:
            os.write(self.commands, json.dumps(request).encode() + b"\n")
        except BrokenPipeError:
            raise Failed(f"python has exited:\n{tail(self.output.text())}") from None
        finished = self.answers.wait(
            lambda data, closed: closed or b"\n" in data[seen:], COMMAND_TIMEOUT
        )
        answer = self.answers.text(seen).partition("\n")[0]
        if not finished:
            raise Failed(f"still running after {COMMAND_TIMEOUT:.0f} s")
        if not answer:
            raise Failed(f"python exited:\n{tail(self.output.text())}")
        result: dict[str, Any] = json.loads(answer)
        return result

    def close(self) -> None:
        for fd in (self.commands, self.results):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(3.0)
        end_process(self.process)


def python_driver(commands: int, results: int) -> None:
    """Run Python blocks sent as JSON lines on fd ``commands`` in one namespace.

    Runs in the examples' python (the venv's). Each answer, on fd ``results``, is
    ``{"status": "ok" | "interrupted" | "error", "traceback": ...}``. An
    ``interrupt`` block gets a real SIGINT, as Ctrl-C, after that many seconds
    (and again each second until it ends).
    """
    os.set_inheritable(commands, False)
    os.set_inheritable(results, False)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    requests = os.fdopen(commands, "rb")
    answers = os.fdopen(results, "w")
    for line in requests:
        request = json.loads(line)
        done = threading.Event()

        def interrupt_later(after: float, done: threading.Event = done) -> None:
            while not done.wait(after):  # Ctrl-C, again each second until the block ends
                os.kill(os.getpid(), signal.SIGINT)
                after = 1.0

        timer = None
        if request["interrupt"]:
            timer = threading.Thread(target=interrupt_later, args=(request["interrupt"],))
            timer.start()
        answer: dict[str, Any] = {"status": "ok"}
        try:
            source = "\n" * (request["line"] - 1) + request["source"]  # tracebacks name doc lines
            exec(compile(source, request["path"], "exec"), namespace)
        except KeyboardInterrupt:
            answer = {"status": "interrupted" if timer else "error", "traceback": ""}
        except BaseException as error:
            import traceback

            below = error.__traceback__.tb_next if error.__traceback__ else None  # not ours
            shown = traceback.format_exception(type(error), error, below)
            answer = {"status": "error", "traceback": "".join(shown)}
        while True:  # a Ctrl-C sent just as the block ended lands here, not in the loop
            try:
                done.set()
                if timer:
                    timer.join()
                time.sleep(0.01)
                break
            except KeyboardInterrupt:
                continue
        sys.stdout.flush()
        sys.stderr.flush()
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


class Run:
    """README.md and docs/*.md (or any documents) run in order, with shared background blocks."""

    def __init__(
        self,
        root: Path,
        env: dict[str, str],
        address: tuple[str, int] = ("127.0.0.1", 12355),
        log: Callable[[str], None] = lambda text: None,
        scratch: Path | None = None,
    ) -> None:
        self.root = root
        self.env = env
        self.address = address
        self.log = log
        self.outcomes: list[Outcome] = []
        self.background: list[Terminal] = []
        self.scratch = Path(tempfile.mkdtemp(prefix="kraken-docs-run-", dir=scratch))
        self.state: tuple[str, dict[str, str]] | None = None  # where the first document ended

    def documents(self, paths: list[str]) -> list[Outcome]:
        try:
            for path in paths:
                self.document(path)
        finally:
            for terminal in self.background:
                terminal.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
        return self.outcomes

    def document(self, path: str) -> None:
        try:
            blocks = parse((self.root / path).read_text(), path)
        except DocError as error:
            self.outcomes.append(Outcome(path, "markdown", "failed", detail=str(error)))
            return
        cwd, env = self.state or (str(self.root), dict(self.env))
        reader = Reader(self, path, cwd, env)
        try:
            failed = False
            for block in blocks:
                if failed:
                    self.outcomes.append(Outcome(block.where, block.kind, "not reached"))
                    continue
                outcome = reader.block(block)
                self.outcomes.append(outcome)
                self.log(
                    f"{outcome.where} {outcome.kind}: {outcome.status} {outcome.seconds:.1f} s"
                )
                failed = outcome.status == "failed"
            if self.state is None:  # even after a failure: later documents still get a go
                self.state = reader.shell.state()
        except Failed as error:
            self.outcomes.append(Outcome(path, "document", "failed", detail=str(error)))
        finally:
            reader.close()


class Reader:
    """One document's examples, in one shell, one namespace and its connections."""

    def __init__(self, run: Run, path: str, cwd: str, env: dict[str, str]) -> None:
        self.run = run
        self.path = path
        self.scratch = Path(tempfile.mkdtemp(dir=run.scratch))
        self.shell = Shell(cwd, env, self.scratch)
        self.python: PythonNamespace | None = None
        self.sessions: dict[str, Terminal] = {}
        self.connections: dict[str, Connection] = {}
        self.captures: dict[str, str] = {}  # horizon shown in the document -> horizon received
        self.blocks = 0

    def close(self) -> None:
        for closing in [*self.sessions.values(), *self.connections.values()]:
            closing.close()
        if self.python:
            self.python.close()
        self.shell.close()

    def block(self, block: Block) -> Outcome:
        started = time.monotonic()
        marker = block.marker.kind if block.marker else ""
        if marker == "skip":
            assert block.marker is not None
            return Outcome(block.where, block.kind, "skipped", detail=block.marker.arg)
        if block.kind == "shown":
            if marker == "file":
                self.write_file(block)
            return Outcome(block.where, block.kind, "shown")
        try:
            getattr(self, f"run_{block.kind}")(block)
        except Failed as error:
            return Outcome(
                block.where, block.kind, "failed", time.monotonic() - started, str(error)
            )
        return Outcome(block.where, block.kind, "ran", time.monotonic() - started)

    def write_file(self, block: Block) -> None:
        assert block.marker is not None
        cwd, _ = self.shell.state()
        target = Path(cwd, block.marker.arg)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text)

    def script(self, block: Block) -> Path:
        self.blocks += 1
        script = self.scratch / f"block-{self.blocks}.sh"
        script.write_text(substitute(block.text, self.captures))
        return script

    # sh ---------------------------------------------------------------------------------

    def run_sh(self, block: Block) -> None:
        script = self.script(block)
        if block.marker and block.marker.kind == "background":
            self.run_background(block, script)
            return
        err = f"__kraken_docs_err_{uuid.uuid4().hex}__"
        trap = (
            f'trap \'printf "\\n{err} %d %d %s\\n" $? $LINENO "${{BASH_SOURCE[0]:-}}"; '
            f'[ "${{BASH_SOURCE[0]:-}}" = {script} ] && return 1\' ERR'
        )
        start = self.shell.position
        token = self.shell.start(f"{trap}\nsource {script}\n__kraken_status=$?\ntrap - ERR")
        done = self.shell.finished(token, COMMAND_TIMEOUT)
        if done is None:
            self.shell.interrupt()
            raise Failed(
                f"still running after {COMMAND_TIMEOUT:.0f} s:\n"
                f"{tail(self.shell.output.text(start))}"
            )
        output = self.shell.output.text(start, done[0])
        self.shell.position = done[1]
        failure = re.search(rf"{err} (\d+) (\d+) {re.escape(str(script))}\n", output)
        if failure:
            status, number = int(failure.group(1)), int(failure.group(2))
            command = block.text.splitlines()[number - 1].strip()
            shown = re.sub(rf"\n?{err} .*\n", "", output)
            raise Failed(
                f"line {block.line + number}: `{command}` exited with status {status}:\n"
                f"{tail(shown)}"
            )

    def run_background(self, block: Block, script: Path) -> None:
        cwd, env = self.shell.state()
        argv = ["bash", "--norc", "--noprofile", str(script)]
        terminal = Terminal(argv, cwd, env, stdin=subprocess.DEVNULL)
        self.run.background.append(terminal)
        assert block.marker is not None
        until = block.marker.arg.removeprefix("until").strip().strip('"')
        if not until:
            return
        deadline = time.monotonic() + BACKGROUND_WAIT
        while until not in terminal.everything():
            if terminal.process.poll() is not None:
                why = f"it exited with status {terminal.process.returncode}"
                break
            if time.monotonic() > deadline:
                why = f"still waiting after {BACKGROUND_WAIT:.0f} s"
                break
            time.sleep(0.05)
        else:
            return
        raise Failed(f"{why}, without printing {until!r}:\n{tail(terminal.everything())}")

    # console ----------------------------------------------------------------------------

    def run_console(self, block: Block) -> None:
        steps = console_steps(block)
        interrupted = bool(block.marker and block.marker.kind == "interrupt")
        for index, (number, command, expected) in enumerate(steps):
            last = index == len(steps) - 1
            self.console_command(number, command, normalize(expected), interrupted and last)

    def console_command(self, number: int, command: str, expected: str, interrupt: bool) -> None:
        shell, captures = self.shell, dict(self.captures)
        start = shell.position
        token = shell.start(substitute(command, self.captures))

        def shown(data: bytes) -> str:
            return normalize(data[start:].decode(errors="replace"))

        done = None
        if interrupt:  # runs until Ctrl-C: once what the document shows is there
            shell.output.wait(
                lambda data, closed: closed or match(expected, shown(data), dict(captures), True),
                OUTPUT_WAIT,
            )
            deadline = time.monotonic() + COMMAND_TIMEOUT
            while done is None and time.monotonic() < deadline:
                shell.interrupt()  # again each second, as a reader would, until it ends
                done = shell.finished(token, 1.0)
        else:
            done = shell.finished(token, COMMAND_TIMEOUT)
        if done is None:
            shell.interrupt()
            shell.finished(token, OUTPUT_WAIT)
            raise Failed(
                f"line {number}: `{command}` still running after {COMMAND_TIMEOUT:.0f} s:\n"
                f"{tail(shell.output.text(start))}"
            )
        end, after, status = done

        def actual(data: bytes) -> str:  # the command's output and what came after it
            return normalize((data[start:end] + data[after:]).decode(errors="replace"))

        def complete(data: bytes, closed: bool) -> bool:
            late = data[after:]  # from jobs still running: whole lines (a print's "\n" may lag)
            whole = not late or late.endswith(b"\n")
            return whole and match(expected, actual(data), dict(captures), True)

        shell.output.wait(complete, OUTPUT_WAIT)
        with shell.output.changed:
            data = bytes(shell.output.data)
        got = actual(data)
        shell.position = len(data)
        if not match(expected, got, self.captures, True):
            raise Failed(
                f"line {number}: `{command}` printed what the document does not show:\n"
                f"{difference(expected, got, f'{self.path}:{number}')}"
            )
        if not expected and status != 0 and not (interrupt and status == 130):
            raise Failed(
                f"line {number}: `{command}` exited with status {status} (it shows no output)"
            )

    # python -----------------------------------------------------------------------------

    def run_python(self, block: Block) -> None:
        if self.python is None:
            cwd, env = self.shell.state()
            self.python = PythonNamespace(cwd, env)
        interrupt = INTERRUPT_AFTER if block.marker and block.marker.kind == "interrupt" else None
        start = len(self.python.output)
        answer = self.python.run(block, substitute(block.text, self.captures), interrupt)
        if answer["status"] == "error":
            printed = self.python.output.text(start)
            raise Failed(
                f"it raised:\n{answer['traceback'].rstrip()}"
                + (f"\nafter printing:\n{tail(printed)}" if printed else "")
            )

    # transcripts ------------------------------------------------------------------------

    def expect(
        self, output: Output, start: int, expected: str, number: int, what: str, latin1: bool
    ) -> int:
        """Wait for ``expected`` at ``start`` of ``output``; the end of what matched."""
        decode: Callable[[bytes], str] = (
            (lambda b: b.decode("latin-1")) if latin1 else (lambda b: b.decode(errors="replace"))
        )
        ellipsis = not latin1  # `...` in a session's output, never in exact wire bytes
        pattern, _ = expected_pattern(expected, self.captures, ellipsis)

        def arrived(data: bytes, closed: bool) -> bool:
            return closed or pattern.match(decode(data[start:])) is not None

        output.wait(arrived, REPLY_WAIT)
        with output.changed:
            data = bytes(output.data)
        got = decode(data[start:])
        found = pattern.match(got)
        if found is None:
            if latin1:  # line ends as the document writes them
                expected, got = (t.replace("\r\n", "\\r\\n\n") for t in (expected, got))
            raise Failed(
                f"line {number}: {what} answered what the document does not show:\n"
                f"{difference(expected, got, f'{self.path}:{number}')}"
            )
        match(expected, found.group(), self.captures, ellipsis)
        return start + len(found.group().encode("latin-1" if latin1 else "utf-8"))

    def quiet(self, output: Output, position: int, number: int, what: str) -> None:
        """Nothing more than the block shows may have arrived."""
        output.wait(lambda data, closed: len(data) > position, QUIET_GRACE)
        extra = output.text(position)
        if extra:
            raise Failed(f"line {number}: {what} answered more than the document shows: {extra!r}")

    def run_session(self, block: Block) -> None:
        assert block.marker is not None
        name = block.marker.arg
        if name not in self.sessions:
            cwd, env = self.shell.state()
            self.sessions[name] = Terminal(
                ["bash", "--norc", "--noprofile", "-c", "exec kraken connect"], cwd, env
            )
        terminal = self.sessions[name]
        what = f"`kraken connect` ({name})"
        number = block.line
        for number, typed, replies in session_steps(block):
            if typed:
                terminal.type(substitute("".join(f"{line}\n" for line in typed), self.captures))
            expected = "".join(f"{line}\n" for line in replies)
            terminal.position = self.expect(
                terminal.output, terminal.position, expected, number, what, latin1=False
            )
        self.quiet(terminal.output, terminal.position, number, what)

    def run_wire(self, block: Block) -> None:
        if block.marker and block.marker.kind == "close":
            closing = self.connections.pop(block.marker.arg, None)
            if closing:
                closing.close()
        used: dict[str, int] = {}
        for number, name, way, texts in wire_steps(block):
            if name not in self.connections:
                self.connections[name] = Connection(self.run.address)
            connection = self.connections[name]
            what = f"connection {name}" if name else "the connection"
            data = unescape(substitute("".join(texts), self.captures))
            if way == "→":
                try:
                    connection.socket.sendall(data)
                except OSError as error:
                    raise Failed(f"line {number}: sending on {what}: {error}") from None
            else:
                connection.position = self.expect(
                    connection.output,
                    connection.position,
                    data.decode("latin-1"),
                    number,
                    what,
                    latin1=True,
                )
            used[name] = number
        for name, number in used.items():
            connection = self.connections[name]
            what = f"connection {name}" if name else "the connection"
            self.quiet(connection.output, connection.position, number, what)


def report(outcomes: list[Outcome]) -> str:
    """The failures, one paragraph each, naming the file and the block's line."""
    return "\n\n".join(
        f"{o.where} ({o.kind} block): {o.detail}" for o in outcomes if o.status == "failed"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the tree to follow")
    parser.add_argument("--report", type=Path, required=True, help="JSON outcomes go here")
    args = parser.parse_args(argv)
    root: Path = args.root

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    scratch = args.report.parent  # the caller's temporary directory: removed with it
    outcomes = Run(root, dict(os.environ), log=log, scratch=scratch).documents(documents(root))
    args.report.write_text(json.dumps([dataclasses.asdict(o) for o in outcomes], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
