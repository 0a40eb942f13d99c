"""The rows held about one person: gathered for an access request, deleted for an erasure.

A person is found by their contact id or by the keyed hash of their address,
never by name or domain, so another person with the same name, domain or
list can never be swept up. Which tables hold personal data, and by which
column, is the privacy registry's to say (:mod:`mailcli.privacy.registry`);
the table and column names given here come from it, never from user input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .archive import archive_deliveries, archive_events
from .rows import dicts, json_value

if TYPE_CHECKING:
    from .db import Connection


def profile(conn: Connection, contact_id: int) -> dict[str, Any]:
    """Every column of the contact row, its attributes decoded."""
    row = dicts(conn, "SELECT * FROM contacts WHERE id = ?", (contact_id,))[0]
    row["attributes"] = json_value(row.get("attributes"))
    return row


def memberships(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    """Every membership with its list's name (``list``) and all its columns, by list name."""
    return dicts(conn, "SELECT l.name AS list, m.* FROM memberships m JOIN lists l ON l.id = m.list_id"
                       " WHERE m.contact_id = ? ORDER BY l.name", (contact_id,))


def deliveries(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    """Every message sent to the contact, with its campaign's name and subject, oldest first."""
    return dicts(conn, "SELECT c.name AS campaign, coalesce(c.subject_line, c.subject) AS campaign_subject, d.status, d.message_id,"
                       " d.attempts, d.last_reply, d.created_at, d.updated_at, d.sent_at"
                       " FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id"
                       " WHERE d.contact_id = ? ORDER BY d.id", (contact_id,))


def rows_about(conn: Connection, table: str, column: str, value: object) -> list[dict[str, Any]]:
    """The rows of a registered table whose ``column`` names the person, as they are."""
    return dicts(conn, f'SELECT * FROM "{table}" WHERE "{column}" = ?', (value,))  # noqa: S608 - registry names


def archive_contact(conn: Connection, contact_id: int) -> None:
    """Fold the contact's deliveries and campaign events into their campaigns'
    totals before they are deleted, so no report changes."""
    archive_deliveries(conn, "contact_id = ?", (contact_id,))
    archive_events(conn, "contact_id = ?", (contact_id,))


def delete_rows_about(conn: Connection, table: str, column: str, value: object) -> int:
    """Delete the rows of a registered table whose ``column`` names the person; how many."""
    return conn.execute(f'DELETE FROM "{table}" WHERE "{column}" = ?', (value,)).rowcount  # noqa: S608 - registry names


def names_of(conn: Connection, contact_id: int) -> tuple[str, ...]:
    """The contact's first and last name that no other contact has too (what
    a search for traces of them looks for).

    A name another contact also has, whole, tells nothing: every byte of it
    in the files is explained by that contact's live value, so a search for
    it could never find a trace, only cost a scan of every table.
    """
    row = conn.execute("SELECT first_name, last_name FROM contacts WHERE id = ?", (contact_id,)).fetchone()
    names = tuple(str(v) for v in row if v) if row else ()
    return tuple(name for name in names if not conn.execute(
        "SELECT 1 FROM contacts WHERE (lower(first_name) = lower(?) OR lower(last_name) = lower(?)) AND id != ?"
        " LIMIT 1", (name, name, contact_id)).fetchone())
