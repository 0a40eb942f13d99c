"""Small helpers for reading rows as dictionaries without touching connection state."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any


def dicts(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = conn.execute(sql, tuple(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def json_value(text: str | None) -> Any:
    """Parse a JSON column; a value that is not JSON is kept as text."""
    if text is None or text == "":
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text
