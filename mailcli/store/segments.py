"""A segment (``mailcli.segments``) as SQL: a WHERE fragment over the contact ``c``.

The fragment is put together from fixed pieces chosen by the kind of each
node of the parsed tree; every name and value the user wrote — the
attribute's JSON path included — is a bound parameter, so no expression can
change the shape of a query. Every comparison is 0 or 1, never NULL, so
``not`` is the plain opposite (a missing field matches ``!=`` and ``not in``).

What each comparison means is written in ``mailcli.segments``; the tests
compare this SQL with a Python evaluation of the same expression on random
contacts, on both engines. Each engine has its own words for the same
meaning: SQLite's GLOB, ``json_extract`` and ``NOCASE`` are PostgreSQL's
regular expressions, ``->>`` and ``translate`` of A-Z, and text compares
byte by byte on both (``COLLATE "C"`` on PostgreSQL, whatever the
database's locale).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..segments import CONTACT_FIELDS, All, Comparison, Literal, Node, Not, Segment
from .contacts import attribute_in_use, known_fields
from .db import is_postgres

if TYPE_CHECKING:
    from .db import Connection

Fragment = tuple[str, list[Any]]

# A field's value as text, NULL when the contact has no such attribute.
_COLUMNS = {"email": "c.email", "first_name": "c.first_name", "last_name": "c.last_name"}
_ORDER = {"=": "=", "!=": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass(frozen=True)
class _Words:
    """How one engine says each piece; ``{v}`` is the field's value as text, ``?`` the literal."""

    attribute: str  # the attribute named by the one parameter, as text (NULL when missing)
    number: str  # the value compared as a number, NULL when it is not written as one
    date: str  # the value compared as a date (YYYY-MM-DD), NULL when it is not written as one
    text: str  # the value compared as text, A-Z folded
    contains: str  # the value holds the literal, A-Z folded
    false: str  # what a comparison that cannot be made is


# A value written as a number: -?[0-9]+(.[0-9]+)? and nothing else.
_SQLITE_IS_NUMBER = ("({v} GLOB '*[0-9]' AND {v} NOT GLOB '?*-*' AND {v} NOT GLOB '*[^0-9.-]*'"
                     " AND {v} NOT GLOB '*.*.*' AND {v} NOT GLOB '.*' AND {v} NOT GLOB '-.*')")
# A value written as a date, as YYYY-MM-DD: 2026-01-31 or 31-01-2026, anything after it ignored.
_SQLITE_AS_DATE = ("(CASE WHEN {v} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' THEN substr({v}, 1, 10)"
                   " WHEN {v} GLOB '[0-9][0-9]-[0-9][0-9]-[0-9][0-9][0-9][0-9]*'"
                   " THEN substr({v}, 7, 4) || '-' || substr({v}, 4, 2) || '-' || substr({v}, 1, 2) END)")
_SQLITE = _Words(
    attribute="CAST(json_extract(c.attributes, ?) AS TEXT)",
    number=f"CASE WHEN {_SQLITE_IS_NUMBER} THEN CAST({{v}} AS REAL) {{op}} ? END",
    date=f"{_SQLITE_AS_DATE} {{op}} ?",
    text="{v} COLLATE NOCASE {op} ?",  # NOCASE folds A-Z only, then compares bytes
    contains="instr(lower({v}), lower(?)) > 0",  # SQLite's lower() folds A-Z only
    false="0",
)

# PostgreSQL: the same meanings in its words. A number is read as SQLite and
# Python read it, rounded to the nearest double; a value too large or too
# small for a double is infinite or zero there, where PostgreSQL's own cast
# would stop the query, so those are worked out exactly first.
_N = "CAST({v} AS numeric)"
_PG_DOUBLE = (f"CASE WHEN abs({_N}) BETWEEN 1e-300 AND 1e300 THEN CAST({_N} AS double precision)"
              f" WHEN abs({_N}) >= 2::numeric ^ 1024 - 2::numeric ^ 970"
              f" THEN CAST(sign({_N}) AS double precision) * 'Infinity'::double precision"
              f" WHEN abs({_N}) * 2::numeric ^ 1075 <= 1 THEN 0::double precision"
              f" ELSE CAST({_N} AS double precision) END")
_PG_AS_DATE = ("(CASE WHEN {v} ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}' THEN substr({v}, 1, 10)"
               " WHEN {v} ~ '^[0-9]{2}-[0-9]{2}-[0-9]{4}'"
               " THEN substr({v}, 7, 4) || '-' || substr({v}, 4, 2) || '-' || substr({v}, 1, 2) END)")
_PG_FOLD = "translate({x}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
_POSTGRES = _Words(
    attribute="(c.attributes::json ->> CAST(? AS text))",
    number=f"CASE WHEN {{v}} ~ '^-?[0-9]+([.][0-9]+)?$' THEN ({_PG_DOUBLE}) {{op}} ? END",
    date=f'{_PG_AS_DATE} COLLATE "C" {{op}} ?',
    text=f'{_PG_FOLD.format(x="{v}")} COLLATE "C" {{op}} {_PG_FOLD.format(x="?")}',
    contains=f"strpos({_PG_FOLD.format(x='{v}')}, {_PG_FOLD.format(x='?')}) > 0",
    false="false",
)


def segment_filter(conn: Connection, segment: Segment | None) -> Fragment:
    """``(sql, params)``: a condition on the contact ``c`` (``true`` without a segment), in ``conn``'s SQL."""
    if segment is None:
        return "true", []
    return _node(segment.tree, _POSTGRES if is_postgres(conn) else _SQLITE)


def check_segment_fields(conn: Connection, segment: Segment) -> None:
    """An error naming the column of a field that no contact has (a
    ConfigError for a segment of mailcli.toml, else a UsageError): a
    misspelt field would otherwise quietly match nobody (or everybody)."""
    for field, column in segment.fields():
        if field in CONTACT_FIELDS or attribute_in_use(conn, field):
            continue
        known = sorted(known_fields(conn))
        guess = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
        raise segment.mistake(column, f"no contact has a field {field!r}"
                              + (f" (did you mean {guess[0]}?)" if guess else ""),
                              hint=f"fields: {', '.join(known[:30])}")


def _node(node: Node, words: _Words) -> Fragment:
    if isinstance(node, Comparison):
        return _comparison(node, words)
    if isinstance(node, Not):
        sql, params = _node(node.operand, words)
        return f"(NOT {sql})", params
    return _joined([_node(operand, words) for operand in node.operands], "AND" if isinstance(node, All) else "OR")


def _joined(parts: list[Fragment], word: str) -> Fragment:
    """Operands joined in a balanced tree, so a long chain stays shallow for SQLite's parser."""
    if len(parts) == 1:
        return parts[0]
    half = len(parts) // 2
    left, right = _joined(parts[:half], word), _joined(parts[half:], word)
    return f"({left[0]} {word} {right[0]})", left[1] + right[1]


def _value(field: str, words: _Words) -> Fragment:
    """The field as text (NULL when missing)."""
    column = _COLUMNS.get(field)
    if column is not None:
        return column, []
    return words.attribute, ["$." + json.dumps(field) if words is _SQLITE else field]


def _repeat(template: str, value: Fragment, after: list[Any] | None = None) -> Fragment:
    """``template`` (whose own placeholders take ``after``) with every ``{v}`` the value.

    An attribute is read from the JSON once per contact, in a subquery, however
    often the template names it: the engine parses the JSON again on every read."""
    sql, params = value
    if params and template.count("{v}") > 1:
        return (f"(SELECT {template.replace('{v}', 'v')} FROM (SELECT {sql} AS v) AS value)",  # noqa: S608 - fixed pieces
                [*(after or []), *params])
    return template.replace("{v}", sql), [*(params * template.count("{v}")), *(after or [])]


def _comparison(node: Comparison, words: _Words) -> Fragment:
    value = _value(node.field, words)
    if node.op in ("empty", "notempty"):
        sql, params = _repeat("({v} IS NULL OR {v} = '')", value)
        return (sql if node.op == "empty" else f"(NOT {sql})"), params
    if node.op == "contains":
        return _repeat(f"coalesce({words.contains}, {words.false})", value, [node.literals[0].written])
    if node.op in ("in", "notin"):
        sql, params = _joined([_compare(value, "=", literal, words) for literal in node.literals], "OR")
        return (sql if node.op == "in" else f"(NOT {sql})"), params
    sql, params = _compare(value, _ORDER[node.op], node.literals[0], words)
    return (f"(NOT {sql})" if node.op == "!=" else sql), params


def _compare(value: Fragment, op: str, literal: Literal, words: _Words) -> Fragment:
    """``value op literal`` as 0 or 1: as numbers, dates or text (A-Z folded), by the literal's kind."""
    template = {"number": words.number, "date": words.date}.get(literal.kind, words.text)
    return _repeat(f"coalesce({template.replace('{op}', op)}, {words.false})", value, [literal.value])
