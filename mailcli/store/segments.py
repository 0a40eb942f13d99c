"""A segment (``mailcli.segments``) as SQL: a WHERE fragment over the contact ``c``.

The fragment is put together from fixed pieces chosen by the kind of each
node of the parsed tree; every name and value the user wrote — the
attribute's JSON path included — is a bound parameter, so no expression can
change the shape of a query. Every comparison is 0 or 1, never NULL, so
``not`` is the plain opposite (a missing field matches ``!=`` and ``not in``).

What each comparison means is written in ``mailcli.segments``; the tests
compare this SQL with a Python evaluation of the same expression on random
contacts.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
from typing import Any

from ..errors import UsageError
from ..segments import CONTACT_FIELDS, All, Comparison, Literal, Node, Not, Segment
from .contacts import attribute_in_use, known_fields

Fragment = tuple[str, list[Any]]

# A field's value as text, NULL when the contact has no such attribute.
_COLUMNS = {"email": "c.email", "first_name": "c.first_name", "last_name": "c.last_name"}

# A value written as a number: -?[0-9]+(.[0-9]+)? and nothing else.
_IS_NUMBER = ("({v} GLOB '*[0-9]' AND {v} NOT GLOB '?*-*' AND {v} NOT GLOB '*[^0-9.-]*'"
              " AND {v} NOT GLOB '*.*.*' AND {v} NOT GLOB '.*' AND {v} NOT GLOB '-.*')")
# A value written as a date, as YYYY-MM-DD: 2026-01-31 or 31-01-2026, anything after it ignored.
_AS_DATE = ("(CASE WHEN {v} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' THEN substr({v}, 1, 10)"
            " WHEN {v} GLOB '[0-9][0-9]-[0-9][0-9]-[0-9][0-9][0-9][0-9]*'"
            " THEN substr({v}, 7, 4) || '-' || substr({v}, 4, 2) || '-' || substr({v}, 1, 2) END)")
_ORDER = {"=": "=", "!=": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def segment_filter(segment: Segment | None) -> Fragment:
    """``(sql, params)``: a condition on the contact ``c`` (``1`` without a segment)."""
    if segment is None:
        return "1", []
    return _node(segment.tree)


def check_segment_fields(conn: sqlite3.Connection, segment: Segment) -> None:
    """A UsageError naming the column of a field that no contact has: a
    misspelt field would otherwise quietly match nobody (or everybody)."""
    for field, column in segment.fields():
        if field in CONTACT_FIELDS or attribute_in_use(conn, field):
            continue
        known = sorted(known_fields(conn))
        guess = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
        source = f"segment {segment.name}" if segment.name else "--where"
        raise UsageError(f"{source}, column {column}: no contact has a field {field!r}"
                         + (f" (did you mean {guess[0]}?)" if guess else ""),
                         hint=f"fields: {', '.join(known[:30])}")


def _node(node: Node) -> Fragment:
    if isinstance(node, Comparison):
        return _comparison(node)
    if isinstance(node, Not):
        sql, params = _node(node.operand)
        return f"(NOT {sql})", params
    return _joined([_node(operand) for operand in node.operands], "AND" if isinstance(node, All) else "OR")


def _joined(parts: list[Fragment], word: str) -> Fragment:
    """Operands joined in a balanced tree, so a long chain stays shallow for SQLite's parser."""
    if len(parts) == 1:
        return parts[0]
    half = len(parts) // 2
    left, right = _joined(parts[:half], word), _joined(parts[half:], word)
    return f"({left[0]} {word} {right[0]})", left[1] + right[1]


def _value(field: str) -> Fragment:
    """The field as text (NULL when missing)."""
    column = _COLUMNS.get(field)
    if column is not None:
        return column, []
    return "CAST(json_extract(c.attributes, ?) AS TEXT)", ["$." + json.dumps(field)]


def _repeat(template: str, value: Fragment, after: list[Any] | None = None) -> Fragment:
    """``template`` (whose own placeholders take ``after``) with every ``{v}`` the value.

    An attribute is read from the JSON once per contact, in a subquery, however
    often the template names it: SQLite parses the JSON again on every read."""
    sql, params = value
    if params and template.count("{v}") > 1:
        return (f"(SELECT {template.replace('{v}', 'v')} FROM (SELECT {sql} AS v))",  # noqa: S608 - fixed pieces
                [*(after or []), *params])
    return template.replace("{v}", sql), [*(params * template.count("{v}")), *(after or [])]


def _comparison(node: Comparison) -> Fragment:
    value = _value(node.field)
    if node.op in ("empty", "notempty"):
        sql, params = _repeat("({v} IS NULL OR {v} = '')", value)
        return (sql if node.op == "empty" else f"(NOT {sql})"), params
    if node.op == "contains":
        return _repeat("coalesce(instr(lower({v}), lower(?)) > 0, 0)", value, [node.literals[0].written])
    if node.op in ("in", "notin"):
        sql, params = _joined([_compare(value, "=", literal) for literal in node.literals], "OR")
        return (sql if node.op == "in" else f"(NOT {sql})"), params
    sql, params = _compare(value, _ORDER[node.op], node.literals[0])
    return (f"(NOT {sql})" if node.op == "!=" else sql), params


def _compare(value: Fragment, op: str, literal: Literal) -> Fragment:
    """``value op literal`` as 0 or 1: as numbers, dates or text (A-Z folded), by the literal's kind."""
    if literal.kind == "number":
        template = f"coalesce(CASE WHEN {_IS_NUMBER} THEN CAST({{v}} AS REAL) {op} ? END, 0)"
    elif literal.kind == "date":
        template = f"coalesce({_AS_DATE} {op} ?, 0)"
    else:
        template = f"coalesce({{v}} COLLATE NOCASE {op} ?, 0)"
    return _repeat(template, value, [literal.value])
