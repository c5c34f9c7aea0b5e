"""Erlang term syntax: the original Kraken's config files and ``-kraken`` values."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kraken.erlang_terms import Atom, ErlangSyntaxError, parse_file, parse_value

ORIGINAL_README_EXAMPLE = """\
[{octopus, [
{pid_file, "/var/run/kraken.pid"},
{log_file, "/var/log/kraken.log"},
{max_tcp_clients, 30000},
{num_router_shards, 8}]}]."""


def assert_same(got: Any, want: Any) -> None:
    """Equal and of the same types all the way down (``Atom("a") == "a"`` otherwise)."""
    assert type(got) is type(want), f"{got!r} is a {type(got).__name__}, not {type(want).__name__}"
    if isinstance(want, list | tuple):
        assert len(got) == len(want), f"{got!r} != {want!r}"
        for got_item, want_item in zip(got, want, strict=True):
            assert_same(got_item, want_item)
    else:
        assert got == want


# -- config files ----------------------------------------------------------------------


def test_the_original_readme_example_parses_to_atoms_strings_and_integers() -> None:
    assert_same(
        parse_file(ORIGINAL_README_EXAMPLE),
        [
            (
                Atom("octopus"),
                [
                    (Atom("pid_file"), "/var/run/kraken.pid"),
                    (Atom("log_file"), "/var/log/kraken.log"),
                    (Atom("max_tcp_clients"), 30000),
                    (Atom("num_router_shards"), 8),
                ],
            )
        ],
    )


def test_the_kraken_spelling_with_an_ip_tuple_and_an_atom_level_parses() -> None:
    text = """[{kraken, [{pid_file, "/var/run/kraken.pid"},
                         {listen_ip, {0,0,0,0}},
                         {log_level, debug},
                         {max_tcp_clients, 30000}]}]."""
    assert_same(
        parse_file(text),
        [
            (
                Atom("kraken"),
                [
                    (Atom("pid_file"), "/var/run/kraken.pid"),
                    (Atom("listen_ip"), (0, 0, 0, 0)),
                    (Atom("log_level"), Atom("debug")),
                    (Atom("max_tcp_clients"), 30000),
                ],
            )
        ],
    )


def test_comments_and_blank_lines_may_appear_anywhere_outside_quotes() -> None:
    text = """%% /etc/kraken.config
%% written by ops
[ % the applications
  {kraken, [ {pid_file, "/run/k.pid"} % where the pid goes
           , {comment, "100% not a comment"} ]}
]   % end of list
. % the dot
%% trailing comment, no newline after it"""
    assert_same(
        parse_file(text),
        [
            (
                Atom("kraken"),
                [(Atom("pid_file"), "/run/k.pid"), (Atom("comment"), "100% not a comment")],
            )
        ],
    )


def test_a_file_with_windows_line_endings_and_a_byte_order_mark_parses() -> None:
    text = "\ufeff[{kraken, [{num_router_shards, 8}]}].\r\n"
    assert_same(parse_file(text), [(Atom("kraken"), [(Atom("num_router_shards"), 8)])])


def test_a_dot_directly_after_an_integer_terminates_rather_than_starting_a_float() -> None:
    assert_same(parse_file("8."), 8)
    assert_same(parse_file("8.5."), 8.5)
    assert_same(parse_file("{a, 8}.%done"), (Atom("a"), 8))


# -- every term type ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("0", 0),
        ("30000", 30000),
        ("-5", -5),
        ("- 5", -5),
        ("007", 7),
        ("16#FF", 255),
        ("16#ff", 255),
        ("2#1010", 10),
        ("36#Zz", 35 * 36 + 35),
        ("-16#10", -16),
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("$a", 97),
        ("$ ", 32),
        ("$\\n", 10),
        ("$\\\\", 92),
        ("$\\x{263A}", 0x263A),
        ("-$a", -97),
    ],
)
def test_integers_decimal_negative_radix_and_character_literals(text: str, want: int) -> None:
    assert_same(parse_value(text), want)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1.5", 1.5),
        ("0.0", 0.0),
        ("-0.25", -0.25),
        ("2.0e3", 2000.0),
        ("2.0E3", 2000.0),
        ("2.5e-3", 0.0025),
        ("2.5e+3", 2500.0),
    ],
)
def test_floats_need_digits_on_both_sides_of_the_point(text: str, want: float) -> None:
    assert_same(parse_value(text), want)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("info", "info"),
        ("true", "true"),
        ("false", "false"),
        ("max_tcp_clients", "max_tcp_clients"),
        ("kraken@host1", "kraken@host1"),
        ("a1B2_c", "a1B2_c"),
        ("'quoted atom'", "quoted atom"),
        ("'Info'", "Info"),
        ("''", ""),
        ("'it\\'s'", "it's"),
        ("'tab\\there'", "tab\there"),
        ("'\"'", '"'),
    ],
)
def test_atoms_plain_and_quoted_become_atom_instances(text: str, want: str) -> None:
    assert_same(parse_value(text), Atom(want))


def test_atom_equals_its_name_but_keeps_its_own_type_and_repr() -> None:
    info = parse_value("info")
    assert info == "info"
    assert isinstance(info, str)
    assert isinstance(info, Atom)
    assert repr(info) == "Atom('info')"
    assert repr(Atom("it's")) == 'Atom("it\'s")'
    assert str(info) == "info"
    assert f"{info}" == "info"
    by_name: dict[str, int] = {info: 1}
    assert by_name["info"] == 1


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('""', ""),
        ('"/var/log/k.log"', "/var/log/k.log"),
        ('"a\\nb"', "a\nb"),
        ('"a\\tb\\rc"', "a\tb\rc"),
        ('"back\\\\slash"', "back\\slash"),
        ('"say \\"hi\\""', 'say "hi"'),
        ('"it\\\'s"', "it's"),
        ('"\\s\\b\\d\\e\\f\\v"', " \b\x7f\x1b\f\v"),
        ('"\\101\\0\\7"', "A\x00\x07"),
        ('"\\1012"', "A2"),
        ('"\\x41\\x{263a}\\x{1F600}"', "A\u263a\U0001f600"),
        ('"\\^g\\^G"', "\x07\x07"),
        ('"caf\u00e9 \u263a"', "caf\u00e9 \u263a"),
        ('"two\nlines"', "two\nlines"),
        ('"adjacent " "strings" " join"', "adjacent strings join"),
        ("'single' ", "single"),
    ],
)
def test_strings_with_erlang_escapes_become_str(text: str, want: str) -> None:
    got = parse_value(text)
    assert_same(got, Atom(want) if text.startswith("'") else want)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("<<>>", ""),
        ('<<"text">>', "text"),
        ('<< "spaced" >>', "spaced"),
        ('<<"a\\nb">>', "a\nb"),
        ('<<"caf\u00e9"/utf8>>', "caf\u00e9"),
        ('<<"a", "b">>', "ab"),
        ('<<"a" "b">>', "ab"),
    ],
)
def test_binaries_of_strings_become_str(text: str, want: str) -> None:
    assert_same(parse_value(text), want)


def test_lists_and_tuples_including_empty_ones() -> None:
    assert_same(parse_value("[]"), [])
    assert_same(parse_value("[ ]"), [])
    assert_same(parse_value("{}"), ())
    assert_same(parse_value("[a]"), [Atom("a")])
    assert_same(parse_value("[a, b]"), [Atom("a"), Atom("b")])
    assert_same(parse_value("{a}"), (Atom("a"),))
    assert_same(parse_value("{127,0,0,1}"), (127, 0, 0, 1))
    assert_same(parse_value('[1, 2.5, x, "s", <<"b">>]'), [1, 2.5, Atom("x"), "s", "b"])


def test_nested_structures_keep_their_shape() -> None:
    text = """[{lager, [{handlers, [{lager_console_backend, info},
                                 {lager_file_backend, [{file, "error.log"}, {level, error}]}]}]},
              {kraken, [{listen_ip, {127,0,0,1}}, {empty, {[], {}, <<>>, ""}}]}]"""
    assert_same(
        parse_value(text),
        [
            (
                Atom("lager"),
                [
                    (
                        Atom("handlers"),
                        [
                            (Atom("lager_console_backend"), Atom("info")),
                            (
                                Atom("lager_file_backend"),
                                [(Atom("file"), "error.log"), (Atom("level"), Atom("error"))],
                            ),
                        ],
                    )
                ],
            ),
            (
                Atom("kraken"),
                [
                    (Atom("listen_ip"), (127, 0, 0, 1)),
                    (Atom("empty"), ([], (), "", "")),
                ],
            ),
        ],
    )


def test_nesting_deeper_than_pythons_recursion_limit_is_fine() -> None:
    depth = 50_000
    term = parse_file("[" * depth + "]" * depth + ".")
    for _ in range(depth - 1):
        assert isinstance(term, list)
        assert len(term) == 1
        term = term[0]
    assert term == []
    with pytest.raises(ErlangSyntaxError, match=rf"line 1, column {depth + 1}: expected a term"):
        parse_file("[" * depth)


# -- command-line values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("8", 8),
        ('"/var/log/k.log"', "/var/log/k.log"),
        ("info", Atom("info")),
        ("{127,0,0,1}", (127, 0, 0, 1)),
        ("'quoted atom'", Atom("quoted atom")),
        ("  1000  ", 1000),
    ],
)
def test_command_line_values_are_one_term_without_a_dot(text: str, want: Any) -> None:
    assert_same(parse_value(text), want)


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("8.", 1, 2, "expected end of input after the term but found '.'"),
        ("", 1, 1, "expected a term but found end of input"),
        ("/var/log/k.log", 1, 1, "expected a term but found '/'"),
        ("1000 2000", 1, 6, "expected end of input after the term but found '2000'"),
        ("Debug", 1, 1, "expected a term but found variable 'Debug'"),
    ],
)
def test_a_command_line_value_that_is_not_one_term_is_an_error(
    text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(ErlangSyntaxError) as caught:
        parse_value(text)
    assert (caught.value.line, caught.value.column, caught.value.reason) == (line, column, message)


# -- malformed input -------------------------------------------------------------------

MALFORMED = [
    # (name, text, line, column, message)
    ("empty input", "", 1, 1, "expected a term but found end of input"),
    ("only whitespace", "  \n\t", 2, 2, "expected a term but found end of input"),
    ("only a comment", "% nothing\n", 2, 1, "expected a term but found end of input"),
    ("only the dot", ".", 1, 1, "expected a term but found '.'"),
    ("missing dot", "[{kraken, []}]", 1, 15, "expected '.' after the term but found end of input"),
    (
        "missing dot before a comment",
        "[a]\n% the end\n",
        3,
        1,
        "expected '.' after the term but found end of input",
    ),
    (
        "missing dot, second term",
        "[a]\n[b].",
        2,
        1,
        "expected '.' after the term but found '['",
    ),
    (
        "unterminated string",
        '[{pid_file, "/var/run/k.pid}].',
        1,
        31,
        "expected '\"' to close the string at line 1, column 13 but found end of input",
    ),
    (
        "unterminated string across lines",
        '[{a, "x},\n  {b, 1}].\n',
        3,
        1,
        "expected '\"' to close the string at line 1, column 6 but found end of input",
    ),
    (
        "unterminated quoted atom",
        "['abc].",
        1,
        8,
        'expected "\'" to close the quoted atom at line 1, column 2 but found end of input',
    ),
    ("unclosed list", "[a, b", 1, 6, "expected ',' or ']' but found end of input"),
    ("unclosed tuple", "{a, b.", 1, 6, "expected ',' or '}' but found '.'"),
    ("tuple closed by bracket", "{a, b].", 1, 6, "expected ',' or '}' but found ']'"),
    ("list closed by brace", "[a, b}.", 1, 6, "expected ',' or ']' but found '}'"),
    ("extra closing bracket", "[a]].", 1, 4, "expected '.' after the term but found ']'"),
    ("opening bracket alone", "[.", 1, 2, "expected a term but found '.'"),
    ("closing bracket alone", "].", 1, 1, "expected a term but found ']'"),
    (
        "the README example one brace short",
        ORIGINAL_README_EXAMPLE.replace("8}]}].", "8}]]."),
        5,
        24,
        "expected ',' or '}' but found ']'",
    ),
    (
        "missing comma between options",
        "[{kraken, [\n  {a, 1}\n  {b, 2}]}].",
        3,
        3,
        "expected ',' or ']' but found '{'",
    ),
    ("trailing comma", "[a, b,].", 1, 7, "expected a term but found ']'"),
    ("leading comma", "[, a].", 1, 2, "expected a term but found ','"),
    (
        "trailing garbage after the dot",
        "[a].\nb.",
        2,
        1,
        "expected end of input after the terminating '.' but found 'b'",
    ),
    ("second dot", "[a]..", 1, 5, "expected end of input after the terminating '.' but found '.'"),
    (
        "second term after the dot",
        '[a]. "x"',
        1,
        6,
        "expected end of input after the terminating '.' but found \"x\"",
    ),
    (
        "bad escape",
        '{a, "x\\qy"}.',
        1,
        7,
        "expected an escape (\\n \\t \\r \\\\ \\\" \\' \\s \\b \\d \\e \\f \\v \\NNN \\xHH "
        "\\x{H..} \\^C) but found '\\q'",
    ),
    (
        "bad hex escape",
        '"\\xZZ".',
        1,
        2,
        "expected \\xHH (two hex digits) or \\x{H...} but found '\\xZZ'",
    ),
    (
        "unclosed braced hex escape",
        '"\\x{41".',
        1,
        2,
        "expected \\xHH (two hex digits) or \\x{H...} but found '\\x{4'",
    ),
    (
        "escape beyond unicode",
        '"\\x{110000}".',
        1,
        2,
        "expected a code point up to 10FFFF but found '110000'",
    ),
    ("control escape without a letter", '"\\^1".', 1, 2, "expected an escape (\\n \\t"),
    ("backslash at end of input", '"\\', 1, 2, "expected an escape (\\n \\t"),
    ("variable instead of atom", "{log_level, Info}.", 1, 13, "expected a term but found variable"),
    ("underscore variable", "[_].", 1, 2, "expected a term but found variable '_'"),
    ("map", "#{a => 1}.", 1, 1, "expected a term but found '#'"),
    ("improper list", "[a | b].", 1, 4, "expected ',' or ']' but found '|'"),
    ("minus without a number", "-a.", 1, 2, "expected a number after '-' but found 'a'"),
    ("bad radix digit", "16#FG.", 1, 5, "expected a base-16 digit but found 'G'"),
    ("radix without digits", "16#.", 1, 4, "expected a base-16 digit after '#' but found '.'"),
    ("radix out of range", "37#1.", 1, 1, "expected a radix from 2 to 36 but found '37'"),
    ("float out of range", "1.0e999.", 1, 1, "expected a float within range but found '1.0e999'"),
    ("float without fraction digits", "1.e3.", 1, 3, "expected end of input after the terminating"),
    ("char literal at end of input", "$", 1, 2, "expected a character after '$' but found end"),
    ("binary of integers", "<<1,2>>.", 1, 3, "expected a string or '>>' but found '1'"),
    ("binary missing close", '<<"a".', 1, 6, "expected ',' or '>>' but found '.'"),
    ("binary with a bad type", '<<"a"/latin1>>.', 1, 7, "expected 'utf8' after '/' but found"),
    ("unknown character", "[a, \u00e9].", 1, 5, "expected a term but found '\u00e9'"),
    ("control character", "[a, \x80].", 1, 5, "expected a term but found '\\x80'"),
]


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_files_raise_syntax_errors_that_say_where_and_what(
    text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(ErlangSyntaxError) as caught:
        parse_file(text)
    error = caught.value
    assert (error.line, error.column) == (line, column), str(error)
    assert error.reason.startswith(message), str(error)
    assert str(error) == f"line {line}, column {column}: {error.reason}"


def test_syntax_errors_are_value_errors() -> None:
    assert issubclass(ErlangSyntaxError, ValueError)
    with pytest.raises(ValueError, match=r"^line 1, column 4: expected '\.'"):
        parse_file("[a]")


def test_an_integer_too_long_for_python_is_a_syntax_error_not_a_value_error() -> None:
    with pytest.raises(ErlangSyntaxError, match=r"^line 1, column 1: expected an integer"):
        parse_file("1" * 5000 + ".")


# -- properties ------------------------------------------------------------------------

_PLAIN_ATOM = re.compile(r"[a-z][A-Za-z0-9_@]*")


def _quote(text: str, quote: str) -> str:
    """Erlang source for ``text`` between ``quote``s, escaping non-ASCII as ``\\x{...}``."""
    out = []
    for char in text:
        if char in ("\\", quote):
            out.append("\\" + char)
        elif ord(char) > 0x7E:
            out.append(f"\\x{{{ord(char):X}}}")
        else:
            out.append(char)
    return quote + "".join(out) + quote


def _write(term: Any, binary: bool) -> str:
    """Erlang source for ``term``; ``binary`` writes strings as ``<<"...">>``."""
    if isinstance(term, Atom):
        return str(term) if _PLAIN_ATOM.fullmatch(term) else _quote(term, "'")
    if isinstance(term, str):
        return "<<" + _quote(term, '"') + ">>" if binary else _quote(term, '"')
    if isinstance(term, float):
        return f"{term:.17e}"
    if isinstance(term, int):
        return str(term)
    if isinstance(term, list):
        return "[" + ", ".join(_write(item, binary) for item in term) + "]"
    assert isinstance(term, tuple)
    return "{" + ",".join(_write(item, binary) for item in term) + "}"


_terms = st.recursive(
    st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text().map(Atom)
    | st.from_regex(_PLAIN_ATOM, fullmatch=True).map(Atom)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.lists(children, max_size=5).map(tuple),
    max_leaves=30,
)


@given(_terms, st.booleans())
def test_any_term_written_as_erlang_parses_back_to_itself(term: Any, binary: bool) -> None:
    source = _write(term, binary)
    assert_same(parse_value(source), term)
    assert_same(parse_file(f"% written by the test\n{source}\n.\n"), term)


_ERLANG_ISH = st.text(alphabet="[]{},.<>/-#$%\"'\\ \n\t0123456789.eExXaZ_@^{}|q", max_size=60)


@given(st.text() | _ERLANG_ISH)
def test_arbitrary_text_either_parses_or_raises_a_syntax_error_inside_the_text(text: str) -> None:
    for parse in (parse_file, parse_value):
        try:
            parse(text)
        except ErlangSyntaxError as error:
            assert 1 <= error.line <= text.count("\n") + 1
            assert 1 <= error.column <= len(text) + 1
            assert str(error).startswith(f"line {error.line}, column {error.column}: expected ")
            assert " but found " in error.reason
