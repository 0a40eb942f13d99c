"""CSV cells that are safe to open in a spreadsheet.

Files mailcli writes for people to open — the rejects of an import, the CSV
files of a subject access export — hold text that came from outside: a
name, an attribute, a cell of an imported file. A spreadsheet runs a cell
that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab, a carriage return
or NUL before one) as a formula, so such a cell gets a leading ``'``, which
makes it text.
"""

from __future__ import annotations

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\x00")


def neutralise(cell: str) -> str:
    """A cell a spreadsheet shows as text and never runs as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell
