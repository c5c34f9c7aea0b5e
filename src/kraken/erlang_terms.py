"""Erlang term syntax, as much as the original Kraken's config needs.

This module owns reading the original's ``.config`` file (one term and a ``.``)
and ``-kraken key value`` values (one term) into Python values, and turns any
malformed input into an ``ErlangSyntaxError`` naming line, column, what was
expected and what was found. What the terms mean is ``kraken.config``'s business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Atom", "ErlangSyntaxError", "format_term", "parse_file", "parse_value"]


class Atom(str):
    """An Erlang atom: equal to the ``str`` of its name, told apart by its type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


class ErlangSyntaxError(ValueError):
    """Text that is not a term: ``line L, column C: expected X but found Y``."""

    def __init__(self, line: int, column: int, reason: str) -> None:
        super().__init__(f"line {line}, column {column}: {reason}")
        self.line = line
        self.column = column
        self.reason = reason


def format_term(value: Any) -> str:
    """``value`` as Erlang text, as an operator wrote it: ``{kraken, [{abc, "x"}]}``."""
    if isinstance(value, Atom):
        plain = value[:1] in _LOWER and all(char in _NAME for char in value)
        return str(value) if plain else "'" + _escaped(value, "'") + "'"
    if isinstance(value, str):
        return '"' + _escaped(value, '"') + '"'
    if isinstance(value, tuple):
        return "{" + ", ".join(map(format_term, value)) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(format_term, value)) + "]"
    return repr(value)  # numbers


def _escaped(text: str, quote: str) -> str:
    text = text.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return "".join(char if char.isprintable() else f"\\x{{{ord(char):X}}}" for char in text)


def parse_file(text: str) -> Any:
    """The term of a config file: one term, then ``.``, then only whitespace and comments."""
    parser = _Parser(text.removeprefix("\ufeff"))
    term = parser.term()
    parser.expect(".", "'.' after the term")
    parser.expect("eof", "end of input after the terminating '.'")
    return term


def parse_value(text: str) -> Any:
    """The term of a ``-kraken key value`` value: one term and nothing after it."""
    parser = _Parser(text)
    term = parser.term()
    parser.expect("eof", "end of input after the term")
    return term


# -- scanning ----------------------------------------------------------------------

_DIGITS = frozenset("0123456789")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NAME = _LOWER | _UPPER | _DIGITS | frozenset("_@")
_ALNUM = _LOWER | _UPPER | _DIGITS
_HEX = frozenset("0123456789abcdefABCDEF")
_OCTAL = frozenset("01234567")
_PUNCTUATION = ("<<", ">>", "[", "]", "{", "}", ",", ".", "-", "/")
_SIMPLE_ESCAPES = {
    "b": "\b",
    "d": "\x7f",
    "e": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "s": " ",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}
_ESCAPES_HELP = (
    "an escape (\\n \\t \\r \\\\ \\\" \\' \\s \\b \\d \\e \\f \\v \\NNN \\xHH \\x{H..} \\^C)"
)
_MAX_CODE_POINT = 0x10FFFF


def _printable(text: str) -> str:
    """``text`` with its unprintable characters (newlines, controls) escaped."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


@dataclass(frozen=True, slots=True)
class _Token:
    """A token: its kind (a punctuation mark, or a word), value and place in the text.

    Kinds: each of ``_PUNCTUATION``; ``integer``, ``float``, ``atom``, ``string``,
    ``variable``; ``other`` for a character no term contains; ``eof``.
    """

    kind: str
    value: Any
    start: int
    end: int


class _Parser:
    """A scanner that yields tokens on demand, and an iterative parser over it.

    The parser keeps open lists and tuples on an explicit stack, so nesting depth
    is bounded by memory, not by Python's recursion limit.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.peeked: _Token | None = None

    # -- errors --------------------------------------------------------------------

    def where(self, index: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, index) + 1
        column = index - (self.text.rfind("\n", 0, index) + 1) + 1
        return line, column

    def error(self, index: int, reason: str) -> ErlangSyntaxError:
        line, column = self.where(index)
        return ErlangSyntaxError(line, column, reason)

    def describe(self, token: _Token) -> str:
        if token.kind == "eof":
            return "end of input"
        shown = self.text[token.start : token.end]
        if len(shown) > 24:
            shown = shown[:21] + "..."
        shown = _printable(shown)
        if token.kind in ("string", "atom") and shown[0] in "\"'":
            return shown
        if token.kind == "variable":
            return f"variable '{shown}'"
        return f"'{shown}'"

    def unexpected(self, token: _Token, expected: str) -> ErlangSyntaxError:
        return self.error(token.start, f"expected {expected} but found {self.describe(token)}")

    # -- tokens --------------------------------------------------------------------

    def peek(self) -> _Token:
        if self.peeked is None:
            self.peeked = self.scan()
        return self.peeked

    def advance(self) -> _Token:
        token = self.peek()
        self.peeked = None
        return token

    def expect(self, kind: str, expected: str) -> _Token:
        token = self.advance()
        if token.kind != kind:
            raise self.unexpected(token, expected)
        return token

    def skip_blanks(self) -> None:
        text, pos, size = self.text, self.pos, len(self.text)
        while pos < size:
            char = text[pos]
            if char <= " ":
                pos += 1
            elif char == "%":
                end = text.find("\n", pos)
                pos = size if end < 0 else end
            else:
                break
        self.pos = pos

    def scan(self) -> _Token:
        self.skip_blanks()
        text, start = self.text, self.pos
        if start >= len(text):
            return _Token("eof", None, start, start)
        char = text[start]
        if char in _DIGITS:
            return self.scan_number(start)
        if char in _LOWER:
            end = self.scan_name(start)
            return _Token("atom", Atom(text[start:end]), start, end)
        if char in _UPPER or char == "_":
            end = self.scan_name(start)
            return _Token("variable", text[start:end], start, end)
        if char == '"':
            value, end = self.scan_quoted(start, "string")
            return _Token("string", value, start, end)
        if char == "'":
            value, end = self.scan_quoted(start, "quoted atom")
            return _Token("atom", Atom(value), start, end)
        if char == "$":
            return self.scan_char(start)
        for mark in _PUNCTUATION:
            if text.startswith(mark, start):
                self.pos = start + len(mark)
                return _Token(mark, None, start, self.pos)
        self.pos = start + 1
        return _Token("other", None, start, self.pos)

    def scan_name(self, start: int) -> int:
        text, end = self.text, start + 1
        while end < len(text) and text[end] in _NAME:
            end += 1
        self.pos = end
        return end

    def scan_run(self, start: int, allowed: frozenset[str]) -> int:
        text, end = self.text, start
        while end < len(text) and text[end] in allowed:
            end += 1
        return end

    def to_int(self, digits: str, base: int, start: int) -> int:
        try:
            return int(digits, base)
        except ValueError:  # the digits are checked: only Python's limit on their number
            raise self.error(
                start, f"expected an integer of fewer digits but found one of {len(digits)}"
            ) from None

    def scan_number(self, start: int) -> _Token:
        text = self.text
        end = self.scan_run(start, _DIGITS)
        if text.startswith("#", end):
            return self.scan_radix(start, end)
        if end + 1 < len(text) and text[end] == "." and text[end + 1] in _DIGITS:
            end = self.scan_run(end + 1, _DIGITS)
            if end < len(text) and text[end] in "eE":
                exponent = end + 1
                if exponent < len(text) and text[exponent] in "+-":
                    exponent += 1
                if exponent < len(text) and text[exponent] in _DIGITS:
                    end = self.scan_run(exponent, _DIGITS)
            value = float(text[start:end])
            if not math.isfinite(value):
                raise self.error(
                    start, f"expected a float within range but found '{text[start:end][:24]}'"
                )
            self.pos = end
            return _Token("float", value, start, end)
        self.pos = end
        return _Token("integer", self.to_int(text[start:end], 10, start), start, end)

    def scan_radix(self, start: int, hash_at: int) -> _Token:
        text = self.text
        base_text = text[start:hash_at].lstrip("0") or "0"
        base = int(base_text) if len(base_text) <= 3 else 0
        if not 2 <= base <= 36:
            raise self.error(start, f"expected a radix from 2 to 36 but found '{base_text[:24]}'")
        end = self.scan_run(hash_at + 1, _ALNUM)
        if end == hash_at + 1:
            found = "end of input" if end >= len(text) else f"'{text[end]}'"
            raise self.error(end, f"expected a base-{base} digit after '#' but found {found}")
        for index in range(hash_at + 1, end):
            if int(text[index], 36) >= base:
                raise self.error(index, f"expected a base-{base} digit but found '{text[index]}'")
        self.pos = end
        return _Token("integer", self.to_int(text[hash_at + 1 : end], base, start), start, end)

    def scan_char(self, start: int) -> _Token:
        text = self.text
        if start + 1 >= len(text):
            raise self.error(start + 1, "expected a character after '$' but found end of input")
        if text[start + 1] == "\\":
            value, end = self.scan_escape(start + 1)
        else:
            value, end = text[start + 1], start + 2
        self.pos = end
        return _Token("integer", ord(value), start, end)

    def scan_quoted(self, start: int, what: str) -> tuple[str, int]:
        text, quote = self.text, self.text[start]
        shown_quote = "'\"'" if quote == '"' else '"\'"'
        parts: list[str] = []
        pos = start + 1
        while True:
            stop = pos
            while stop < len(text) and text[stop] != quote and text[stop] != "\\":
                stop += 1
            parts.append(text[pos:stop])
            if stop >= len(text):
                line, column = self.where(start)
                raise self.error(
                    stop,
                    f"expected {shown_quote} to close the {what} at line {line}, column {column} "
                    "but found end of input",
                )
            if text[stop] == quote:
                self.pos = stop + 1
                return "".join(parts), stop + 1
            char, pos = self.scan_escape(stop)
            parts.append(char)

    def scan_escape(self, start: int) -> tuple[str, int]:
        """The character of the escape whose backslash is at ``start``, and where it ends."""
        text = self.text
        pos = start + 1
        if pos >= len(text):
            raise self.error(start, f"expected {_ESCAPES_HELP} but found end of input")
        char = text[pos]
        if char in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[char], pos + 1
        if char in _OCTAL:
            end = self.scan_run(pos, _OCTAL)
            end = min(end, pos + 3)
            return chr(int(text[pos:end], 8)), end
        if char == "x":
            if text.startswith("{", pos + 1):
                end = self.scan_run(pos + 2, _HEX)
                if end > pos + 2 and text.startswith("}", end):
                    digits = text[pos + 2 : end].lstrip("0") or "0"
                    if len(digits) <= 6 and int(digits, 16) <= _MAX_CODE_POINT:
                        return chr(int(digits, 16)), end + 1
                    raise self.error(
                        start, f"expected a code point up to 10FFFF but found '{digits[:24]}'"
                    )
            elif pos + 2 < len(text) and text[pos + 1] in _HEX and text[pos + 2] in _HEX:
                return chr(int(text[pos + 1 : pos + 3], 16)), pos + 3
            raise self.error(
                start,
                "expected \\xHH (two hex digits) or \\x{H...} but found "
                f"{self.shown_escape(start, 4)}",
            )
        if char == "^" and pos + 1 < len(text) and text[pos + 1] in _LOWER | _UPPER:
            return chr(ord(text[pos + 1]) & 31), pos + 2
        raise self.error(start, f"expected {_ESCAPES_HELP} but found {self.shown_escape(start)}")

    def shown_escape(self, start: int, length: int = 2) -> str:
        return "'" + _printable(self.text[start : start + length].split("\n", 1)[0]) + "'"

    # -- terms ---------------------------------------------------------------------

    def term(self) -> Any:
        """One term, read iteratively: ``stack`` holds the open lists and tuples."""
        stack: list[tuple[str, list[Any]]] = []
        while True:
            token = self.advance()
            kind = token.kind
            value: Any
            if kind in ("[", "{"):
                closer = "]" if kind == "[" else "}"
                if self.peek().kind == closer:
                    self.advance()
                    value = [] if kind == "[" else ()
                else:
                    stack.append((closer, []))
                    continue
            elif kind in ("integer", "float", "atom"):
                value = token.value
            elif kind == "string":
                value = self.strings(token)
            elif kind == "<<":
                value = self.binary()
            elif kind == "-":
                number = self.advance()
                if number.kind not in ("integer", "float"):
                    raise self.unexpected(number, "a number after '-'")
                value = -number.value
            else:
                raise self.unexpected(token, "a term")
            # A complete value: put it in the innermost open list or tuple, closing
            # those that end here; with none open, it is the whole term.
            while stack:
                closer, items = stack[-1]
                items.append(value)
                after = self.advance()
                if after.kind == ",":
                    break
                if after.kind != closer:
                    raise self.unexpected(after, f"',' or '{closer}'")
                stack.pop()
                value = items if closer == "]" else tuple(items)
            else:
                return value

    def strings(self, first: _Token) -> str:
        """Adjacent string literals, joined as Erlang joins them."""
        parts = [first.value]
        while self.peek().kind == "string":
            parts.append(self.advance().value)
        return "".join(parts)

    def binary(self) -> str:
        """The rest of ``<<"text">>``, ``<<"a", "b"/utf8>>`` or ``<<>>`` (after ``<<``)."""
        if self.peek().kind == ">>":
            self.advance()
            return ""
        parts: list[str] = []
        expected = "a string or '>>'"
        while True:
            parts.append(self.strings(self.expect("string", expected)))
            expected = "a string"
            if self.peek().kind == "/":
                self.advance()
                kind = self.advance()
                if kind.kind != "atom" or kind.value != "utf8":
                    raise self.unexpected(kind, "'utf8' after '/'")
            after = self.advance()
            if after.kind == ">>":
                return "".join(parts)
            if after.kind != ",":
                raise self.unexpected(after, "',' or '>>'")
