"""Reading rows as dictionaries, and the JSON text columns as values."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .db import Connection


def dicts(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The rows of a query as dictionaries keyed by column name, in column order."""
    cur = conn.execute(sql, tuple(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def json_value(text: str | None) -> Any:
    """A JSON column's value; empty is ``{}``, and a value that is not JSON is kept as text."""
    if text is None or text == "":
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text
