"""The suppression list: who must never be mailed (again), by keyed hash.

A row names a person by the HMAC of their normalised address, never by the
address, so it outlives an erasure and stops a later import or send. Its
``scope`` is a list name, or ``*`` for all marketing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection

ALL = "*"


def suppressed_hmacs(conn: sqlite3.Connection, list_name: str, among: Collection[str] | None = None) -> set[str]:
    """The addresses suppressed for ``list_name`` or all marketing, as a set of
    hashes: the whole set once (cheaper than a lookup per recipient, and
    bounded by the suppression list), or only those ``among`` a page."""
    if among is None:
        rows = conn.execute("SELECT hmac FROM suppressions WHERE scope IN (?, ?)", (ALL, list_name))
    elif not among:
        return set()
    else:
        marks = ",".join("?" for _ in among)
        rows = conn.execute(
            f"SELECT hmac FROM suppressions WHERE scope IN (?, ?) AND hmac IN ({marks})",  # noqa: S608 - placeholders only
            (ALL, list_name, *among),
        )
    return {row[0] for row in rows}
