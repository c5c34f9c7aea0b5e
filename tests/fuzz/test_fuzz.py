"""The wire fuzzer's saved inputs, replayed through its checks on every test run.

regressions/ holds inputs that once showed a bug (one test each, named by file);
corpus/ the inputs the fuzzer kept for reaching new code (one test for all). The
fuzzing itself is `make fuzz`, and its 60-second run in `make test`
(tests/fuzz/README.md). The last tests show that the checks catch what they are
meant to, and that the fallback without atheris runs.
"""

from __future__ import annotations

from pathlib import Path

import harness
import pytest
import run

import kraken.wire.parser as parser_module
from kraken.wire.parser import ParserFailure


def _check(path: Path) -> None:
    data = path.read_bytes()
    try:
        harness.check(data)
    except Exception as error:
        raise AssertionError(f"{path.name}: {harness.describe(data)}") from error


@pytest.mark.parametrize("path", sorted(run.REGRESSIONS.iterdir()), ids=lambda path: path.name)
def test_regression_input(path: Path) -> None:
    _check(path)


def test_corpus() -> None:
    paths = sorted(run.CORPUS.iterdir())
    assert len(paths) > 100
    for path in paths:
        _check(path)


def test_reply_parser_raises_only_reply_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "KNOWN_REPLY_BUGS", [])
    harness.check((run.REGRESSIONS / "replies-value-length-4301-digits").read_bytes())


# -- the checks have teeth ------------------------------------------------------------


def test_a_parser_failure_is_a_failure_of_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser's safety net would hide a bug from the fuzzer: the check re-raises it."""

    def failing_line(line: bytes) -> object:
        raise IndexError("injected fault")

    monkeypatch.setattr(parser_module, "_decode_line", failing_line)
    data = harness.make_input("requests", b"version\r\n")
    assert isinstance(parser_module.RequestParser().feed(b"version\r\n")[0].error, ParserFailure)  # type: ignore[union-attr]
    with pytest.raises(IndexError, match="injected fault"):
        harness.check(data)


def test_a_parser_that_departs_from_the_spec_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # two spaces after MESSAGE: not the fast path's entry head, the exact path's
    data = harness.make_input("publish_block", b"MESSAGE  " + b"t" * 200 + b" 1\r\nx")
    harness.check(data)
    monkeypatch.setattr(parser_module, "MAX_TOPIC_BYTES", 100)
    with pytest.raises(AssertionError, match="the spec"):
        harness.check(data)


def test_a_split_dependent_parser_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    feed = parser_module.RequestParser.feed

    def forgetful_feed(self: parser_module.RequestParser, data: bytes) -> list[object]:
        return feed(self, data)[:1]  # drops all but the first request of a read

    monkeypatch.setattr(parser_module.RequestParser, "feed", forgetful_feed)
    with pytest.raises(AssertionError, match="cut differently"):
        harness.check(harness.make_input("requests", b"version\r\nquit\r\n", bytewise=True))


def test_the_mutator_without_atheris_runs() -> None:
    assert run.fuzz_without_coverage(0.5, "a test", seed=11) == 0
