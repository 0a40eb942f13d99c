"""Segments: the expression language that picks part of a list.

``send --where``, ``contacts --where``, ``lists --where`` and the named
segments of ``[segments]`` in mailcli.toml all speak it::

    city = 'Utrecht' and member_rating >= 3
    not (country in ('NL', 'BE') or email contains '@example.org')
    signup_date >= 2026-01-01 and phone is not empty

A field is ``email``, ``first_name``, ``last_name`` or any attribute of the
contacts (an imported column such as ``member_rating``). The literal on the
right decides how a comparison works: a number (``3``, ``-2.5``) compares
numerically with field values written as numbers, a date (``2026-01-31``)
compares with field values written as ``2026-01-31`` or ``31-01-2026`` (a time
after them ignored), and text in quotes compares as text, ignoring the case of
A-Z; an address compared with ``email`` by ``=``, ``!=`` or ``in`` is first
normalised as every address is (``jan@müller.de`` is ``jan@xn--mller-kva.de``).
A value that is missing, or not a number or date where one is compared,
matches no comparison; ``!=`` and ``not in`` are exactly the opposite of
``=`` and ``in``, so they match it.

This module is the parser: a hand-written recursive descent over a small
tokenizer, turning the text into a tree of frozen dataclasses, or a
``SegmentError`` that names the column of the mistake. It never sees SQL:
``mailcli.store.segments`` turns the tree into a fixed SQL fragment with every
value bound as a parameter.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError, UsageError

#: Fields every contact has; anything else is an attribute.
CONTACT_FIELDS = ("email", "first_name", "last_name")
#: The words that start the comparisons other than =, !=, <, <=, >, >=.
KEYWORDS = ("and", "or", "not", "in", "contains", "is", "empty")
MAX_LENGTH = 10_000  # characters: far more than any hand-written segment
MAX_DEPTH = 50  # nested parentheses and `not`s


class SegmentError(UsageError):
    """An expression that does not parse; the message names the column."""

    def __init__(self, message: str, *, column: int, source: str, hint: str | None = None) -> None:
        super().__init__(f"{source}, column {column}: {message}", hint=hint)
        self.column = column
        self.problem = message


# -- the tree -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    """A value written in the expression: ``kind`` is text, number or date."""

    kind: str
    value: str | float  # text and dates (ISO, YYYY-MM-DD) as str, numbers as float
    written: str  # as typed: what `contains` looks for when given a number or date


@dataclass(frozen=True, slots=True)
class Comparison:
    """``field OP literal``; ``in`` has one or more literals, ``empty`` none."""

    field: str
    op: str  # = != < <= > >= in notin contains empty notempty
    literals: tuple[Literal, ...]
    column: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class All:
    """Every operand holds (``and``)."""

    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Any_:
    """At least one operand holds (``or``)."""

    operands: tuple[Node, ...]


Node = Comparison | Not | All | Any_


@dataclass(frozen=True, slots=True)
class Segment:
    """A parsed expression: its text, its tree and the name it was given (if any)."""

    text: str
    tree: Node
    name: str | None = None
    source: str = "--where"  # where it was written, as a message names it
    in_config: bool = False  # a segment of [segments] in mailcli.toml

    def fields(self) -> list[tuple[str, int]]:
        """Every field the expression reads, with the column where it first appears."""
        seen: dict[str, int] = {}

        def walk(node: Node) -> None:
            if isinstance(node, Comparison):
                seen.setdefault(node.field, node.column)
            elif isinstance(node, Not):
                walk(node.operand)
            else:
                for operand in node.operands:
                    walk(operand)

        walk(self.tree)
        return list(seen.items())

    def mistake(self, column: int, problem: str, hint: str | None = None) -> UsageError | ConfigError:
        """The error for a mistake found once the expression has parsed (a field
        no contact has): the configuration's (exit 4) for a segment of
        ``[segments]``, a usage error (exit 2) for an expression on the command line."""
        message = f"{self.source}, column {column}: {problem}"
        return ConfigError(message, hint=hint) if self.in_config else UsageError(message, hint=hint)

    @property
    def audit_name(self) -> str:
        """How the audit log names it: the segment's name, never an expression
        (which may quote someone's address, and the audit log outlives erasure)."""
        return self.name or "--where"

    @property
    def label(self) -> str:
        """How a campaign or a listing names it: the segment's name, else the expression."""
        return self.name or self.text


# -- tokens ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # name, text, number, date, op, punct, end
    value: str
    column: int


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2}(?![0-9A-Za-z_.-]))
  | (?P<otherdate>[0-9]{1,4}[-/.][0-9]{1,2}[-/.][0-9]{1,4}(?![0-9A-Za-z_./-]))
  | (?P<number>-?[0-9]+(?:\.[0-9]+)?(?![0-9A-Za-z_.]))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>!=|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<quote>['"])
""", re.VERBOSE)


def _tokens(text: str, source: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            char = text[at]
            shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
            raise SegmentError(f"unexpected character {shown}", column=at + 1, source=source,
                               hint=_HINT)
        kind = match.lastgroup or ""
        if kind == "quote":
            value, at = _quoted(text, at, source)
            tokens.append(_Token("text", value, match.start() + 1))
            continue
        if kind != "space":
            tokens.append(_Token(kind, match.group(), at + 1))
        at = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _quoted(text: str, start: int, source: str) -> tuple[str, int]:
    """Text in single or double quotes, the quote doubled inside (``'it''s'``)."""
    quote = text[start]
    parts: list[str] = []
    at = start + 1
    while True:
        end = text.find(quote, at)
        if end < 0:
            raise SegmentError(f"text opened with {quote} here is never closed", column=start + 1, source=source,
                               hint=f"close it with {quote}; write {quote}{quote} for a {quote} inside the text")
        parts.append(text[at:end])
        if text.startswith(quote, end + 1):
            parts.append(quote)
            at = end + 2
            continue
        return "".join(parts), end + 1


_HINT = ("fields compare with =, !=, <, <=, >, >=, in (...), contains, is empty; join with and, or, not;"
         " text goes in quotes: city = 'Utrecht' and member_rating >= 3")


# -- the parser -------------------------------------------------------------------


def parse_segment(text: str, *, source: str = "--where", name: str | None = None, in_config: bool = False
                  ) -> Segment:
    """Parse an expression; a ``SegmentError`` (exit 2) names ``source`` and the column of the mistake."""
    if len(text) > MAX_LENGTH:
        raise SegmentError(f"the expression is {len(text)} characters long, more than {MAX_LENGTH}", column=1,
                           source=source)
    parser = _Parser(_tokens(text, source), source)
    if parser.peek.kind == "end":
        raise SegmentError("the expression is empty", column=1, source=source, hint=_HINT)
    tree = parser.expression(0)
    token = parser.peek
    if token.kind != "end":
        raise SegmentError(f"expected and, or or the end, found {_shown(token)}", column=token.column,
                           source=source, hint=_HINT)
    return Segment(text=text.strip(), tree=tree, name=name, source=source, in_config=in_config)


def _date_spelling(written: str) -> str:
    """How a date written otherwise than 2026-01-31 is written here: day
    first (05-01-2023, as a field's values are read) or year first (2023-1-5)."""
    parts = [int(p) for p in re.split(r"[-/.]", written)]
    year, month, day = parts if parts[0] > 31 else parts[::-1]
    try:
        iso = datetime.date(year, month, day).isoformat() if year >= 1000 else None
    except ValueError:
        iso = None
    if iso is None:
        return f"{written} is not a date; write dates as 2026-01-31 (year-month-day, unquoted)"
    return f"write the date {written} as {iso} (year-month-day, unquoted)"


def _shown(token: _Token) -> str:
    if token.kind == "end":
        return "the end"
    if token.kind == "text":
        return f"text {_quote(token.value)}"
    return repr(token.value)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class _Parser:
    """Recursive descent, one method per rule::

        expression := conjunction ("or" conjunction)*
        conjunction := negation ("and" negation)*
        negation := "not" negation | "(" expression ")" | comparison
        comparison := FIELD ( OP literal | ["not"] "in" "(" literal ("," literal)* ")"
                            | "contains" literal | "is" ["not"] "empty" )
        literal := 'text' | "text" | NUMBER | DATE
    """

    def __init__(self, tokens: list[_Token], source: str) -> None:
        self.tokens = tokens
        self.at = 0
        self.source = source

    @property
    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        if token.kind != "end":
            self.at += 1
        return token

    def word(self, *words: str) -> bool:
        """The next token is one of these keywords (any case); taken if so."""
        token = self.peek
        if token.kind == "name" and token.value.lower() in words:
            self.at += 1
            return True
        return False

    def fail(self, problem: str, token: _Token, hint: str | None = _HINT) -> SegmentError:
        return SegmentError(problem, column=token.column, source=self.source, hint=hint)

    def expression(self, depth: int) -> Node:
        operands = [self.conjunction(depth)]
        while self.word("or"):
            operands.append(self.conjunction(depth))
        return operands[0] if len(operands) == 1 else Any_(tuple(operands))

    def conjunction(self, depth: int) -> Node:
        operands = [self.negation(depth)]
        while self.word("and"):
            operands.append(self.negation(depth))
        return operands[0] if len(operands) == 1 else All(tuple(operands))

    def negation(self, depth: int) -> Node:
        token = self.peek
        if depth >= MAX_DEPTH:
            raise self.fail(f"nested more than {MAX_DEPTH} deep", token, hint=None)
        if self.word("not"):
            return Not(self.negation(depth + 1))
        if token.kind == "punct" and token.value == "(":
            self.take()
            inner = self.expression(depth + 1)
            closing = self.peek
            if not (closing.kind == "punct" and closing.value == ")"):
                raise self.fail(f"expected ) to close the ( at column {token.column}, found {_shown(closing)}",
                                closing)
            self.take()
            return inner
        return self.comparison()

    # Complexity: one branch per form of comparison the segment language has, each with its own error.
    def comparison(self) -> Comparison:
        token = self.take()
        if token.kind != "name" or token.value.lower() in KEYWORDS:
            raise self.fail(f"expected a field name, found {_shown(token)}", token)
        field = token.value
        op_token = self.peek
        if op_token.kind == "op":
            self.take()
            literal = self.literal(op_token.value)
            if field == "email" and op_token.value in ("=", "!="):
                literal = _as_address(literal)
            return Comparison(field, op_token.value, (literal,), token.column)
        if self.word("contains"):
            return Comparison(field, "contains", (self.literal("contains"),), token.column)
        if self.word("is"):
            negated = self.word("not")
            if not self.word("empty"):
                raise self.fail(f"expected empty after is{' not' if negated else ''}, found {_shown(self.peek)}",
                                self.peek)
            return Comparison(field, "notempty" if negated else "empty", (), token.column)
        negated = self.word("not")
        if self.word("in"):
            values = self.values()
            if field == "email":
                values = tuple(map(_as_address, values))
            return Comparison(field, "notin" if negated else "in", values, token.column)
        after, found = (f"{field} not", self.peek) if negated else (field, op_token)
        raise self.fail(f"expected =, !=, <, <=, >, >=, in, contains or is after {after}, found {_shown(found)}",
                        found)

    def values(self) -> tuple[Literal, ...]:
        opening = self.take()
        if not (opening.kind == "punct" and opening.value == "("):
            raise self.fail(f"expected ( after in, found {_shown(opening)}", opening,
                            hint="in takes a list in parentheses: country in ('NL', 'BE')")
        literals = [self.literal("in")]
        while True:
            token = self.take()
            if token.kind == "punct" and token.value == ",":
                literals.append(self.literal(","))
                continue
            if token.kind == "punct" and token.value == ")":
                return tuple(literals)
            raise self.fail(f"expected , or ) in the list of in, found {_shown(token)}", token)

    def literal(self, after: str) -> Literal:
        token = self.take()
        if token.kind == "text":
            return Literal("text", token.value, token.value)
        if token.kind == "number":
            return Literal("number", float(token.value), token.value)
        if token.kind == "date":
            try:
                datetime.date.fromisoformat(token.value)
            except ValueError:
                raise self.fail(f"{token.value} is not a date", token, hint="dates are written 2026-01-31") from None
            return Literal("date", token.value, token.value)
        if token.kind == "otherdate":
            raise self.fail(_date_spelling(token.value), token,
                            hint="a date in an expression is year-month-day, unquoted (2026-01-31), and compares"
                                 " with values written 2026-01-31 or 31-01-2026")
        hint = _HINT
        if token.kind == "name" and token.value.lower() not in KEYWORDS:
            hint = f"text goes in quotes: {_quote(token.value)}"
        raise self.fail(f"expected 'text', a number or a date after {after}, found {_shown(token)}", token, hint)


def _as_address(literal: Literal) -> Literal:
    """An address compared with ``email`` (=, !=, in) as every address is
    stored (``mailcli.addresses``): ``jan@müller.de`` is ``jan@xn--mller-kva.de``.
    Text that is no address stays as written."""
    from .addresses import AddressError, normalise_pair

    if literal.kind != "text" or "@" not in str(literal.value):
        return literal
    try:
        address, _ = normalise_pair(str(literal.value))
    except AddressError:
        return literal
    return Literal("text", address, literal.written)


# -- named segments ---------------------------------------------------------------


def check_segments(segments: Mapping[str, object], config_name: str) -> dict[str, str]:
    """The ``[segments]`` table of mailcli.toml, every expression parsed; a
    ``ConfigError`` (exit 4) names the key and the column of a mistake."""
    checked: dict[str, str] = {}
    for key, value in segments.items():
        where = f"{config_name}: segments.{key}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", key):
            raise ConfigError(f"{where}: a segment name is letters, digits, _ and - (got {key!r})")
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be an expression in a string, like \"city = 'Utrecht'\"")
        try:
            parse_segment(value, source=where, name=key)
        except SegmentError as exc:
            raise ConfigError(exc.message, hint=exc.hint) from None
        checked[key] = value
    return checked


def choose_segment(segments: Mapping[str, str], *, where: str | None = None,
                   segment: str | None = None, config_name: str = "mailcli.toml") -> Segment | None:
    """The segment a command was given: ``--where EXPR`` or ``--segment NAME``
    (one of the ``[segments]`` of the configuration file ``config_name``), or None for neither."""
    if where is not None and segment is not None:
        raise UsageError("Give --where or --segment, not both",
                         hint="a named segment is an expression in [segments] of mailcli.toml")
    if where is not None:
        return parse_segment(where, source="--where")
    if segment is None:
        return None
    if segment not in segments:
        guess = difflib.get_close_matches(segment, list(segments), n=1, cutoff=0.5)
        names = ", ".join(sorted(segments)) or "none yet"
        raise UsageError(f"No segment named {segment!r}" + (f" (did you mean {guess[0]}?)" if guess else ""),
                         hint=f"segments in [segments] of mailcli.toml: {names}")
    return parse_segment(segments[segment], source=f"{config_name}: segments.{segment}", name=segment,
                         in_config=True)
