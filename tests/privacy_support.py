"""Seeding a project's database with SQL for the privacy, purge and backup tests.

The import, send and feedback commands write these rows in real use; these
helpers write the same rows directly (same schema, same conventions) so the
privacy tests can build exact situations: who unsubscribed when, which
deliveries are how old.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from mailcli import tokens
from mailcli.addresses import normalise_address
from mailcli.config import load_settings
from mailcli.store import open_store

T0 = "2026-01-01T00:00:00Z"


def settings_for(root: Path) -> Any:
    return load_settings(root / "mailcli.toml")


def connect(root: Path) -> sqlite3.Connection:
    store = open_store(settings_for(root).project.database)
    return store.conn


def add_list(conn: sqlite3.Connection, name: str, at: str = T0) -> int:
    row = conn.execute("SELECT id FROM lists WHERE name = ?", (name,)).fetchone()
    if row:
        return int(row[0])
    return int(conn.execute("INSERT INTO lists (name, created_at) VALUES (?, ?) RETURNING id", (name, at)).fetchone()[0])


def add_contact(conn: sqlite3.Connection, email: str, first: str = "", last: str = "", *,
                attributes: dict[str, Any] | None = None, status: str = "active", at: str = T0,
                activity: str | None = None, source: str | None = "contacts.csv",
                restricted_at: str | None = None, no_marketing_at: str | None = None) -> int:
    n = normalise_address(email)
    cur = conn.execute(
        "INSERT INTO contacts (uid, email, email_key, first_name, last_name, attributes, status, restricted_at,"
        " no_marketing_at, source, created_at, updated_at, last_activity_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
        " RETURNING id",
        (tokens.new_uid(), n.address, n.key, first, last, json.dumps(attributes or {}), status, restricted_at,
         no_marketing_at, source, at, at, activity or at),
    )
    return int(cur.fetchone()[0])


def add_membership(conn: sqlite3.Connection, contact_id: int, list_id: int, status: str = "subscribed", *,
                   at: str = T0, unsubscribed_at: str | None = None, consent_source: str = "contacts.csv",
                   consent_ip: str | None = "192.0.2.7") -> None:
    conn.execute(
        "INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_method, consent_at, consent_ip,"
        " consent_text, confirmed_at, unsubscribed_at, unsubscribe_channel, created_at, updated_at, basis)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'consent')",
        (contact_id, list_id, status, consent_source, "import", at, consent_ip, "Yes, send me the newsletter",
         at if status == "subscribed" else None, unsubscribed_at,
         "one-click" if unsubscribed_at else None, at, unsubscribed_at or at),
    )


def add_signup(conn: sqlite3.Connection, contact_id: int, list_id: int, wording: str, *, at: str = T0) -> None:
    """A confirmed sign-up through the form, with the wording shown, as ``serve`` records one."""
    from mailcli.store.signups import add_signup as insert_signup
    from mailcli.store.signups import store_consent_text

    digest = store_consent_text(conn, wording, "en", at)
    insert_signup(conn, nonce=tokens.new_uid(), contact_id=contact_id, list_id=list_id, form="form /subscribe/news",
                  language="en", text_hash=digest, ip="192.0.2.0/24", now=at, expires_at=at)
    conn.execute("UPDATE signups SET confirmed_at = ?, confirmed_ip = '192.0.2.0/24' WHERE contact_id = ?",
                 (at, contact_id))


def add_campaign(conn: sqlite3.Connection, name: str, list_id: int, at: str = T0) -> int:
    cur = conn.execute(
        "INSERT INTO campaigns (uid, name, template, list_id, list_name, subject, status, created_at)"
        " VALUES (?, ?, 'newsletter', ?, (SELECT name FROM lists WHERE id = ?), 'Hello', 'finished', ?)",
        (tokens.new_uid(), name, list_id, list_id, at),
    )
    return int(cur.lastrowid)


def add_delivery(conn: sqlite3.Connection, campaign_id: int, contact_id: int, status: str = "sent", *,
                 at: str = T0, reply: str | None = "250 2.0.0 queued") -> int:
    cur = conn.execute(
        "INSERT INTO deliveries (campaign_id, contact_id, status, message_id, attempts, last_reply, created_at,"
        " updated_at, sent_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
        (campaign_id, contact_id, status, f"<{tokens.new_uid()}.{tokens.new_uid()}@example.org>", reply, at, at,
         at if status == "sent" else None),
    )
    return int(cur.lastrowid)


def add_event(conn: sqlite3.Connection, contact_id: int, kind: str, *, campaign_id: int | None = None,
              channel: str = "one-click", scope: str = "news", at: str = T0,
              detail: dict[str, Any] | None = None) -> None:
    conn.execute(
        "INSERT INTO events (contact_id, campaign_id, kind, channel, scope, detail, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (contact_id, campaign_id, kind, channel, scope, json.dumps(detail or {}), at),
    )


def add_suppression(conn: sqlite3.Connection, root: Path, email: str, scope: str, reason: str,
                    at: str = T0) -> None:
    secret = settings_for(root).secret()
    conn.execute(
        "INSERT OR IGNORE INTO suppressions (hmac, scope, reason, channel, created_at) VALUES (?, ?, ?, 'test', ?)",
        (tokens.address_hmac(secret, normalise_address(email).key), scope, reason, at),
    )


def db_files(root: Path) -> list[Path]:
    db = settings_for(root).project.database
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]


def remnants(root: Path, *needles: str) -> list[str]:
    """Needles (any ASCII case, UTF-8) found in the .db, -wal or -shm files."""
    found = []
    for path in db_files(root):
        data = path.read_bytes().lower()
        for needle in needles:
            if needle.encode("utf-8").lower() in data:
                found.append(f"{needle} in {path.name}")
    return found


def count(conn: sqlite3.Connection, table: str, where: str = "1", params: tuple[Any, ...] = ()) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0])  # noqa: S608


# -- clock and a shared cast of people ---------------------------------------------

NOW = "2026-03-02T12:00:00Z"


class FrozenClock:
    """``mailcli.clock.now`` fixed at a moment the test can move."""

    def __init__(self, at: str = NOW) -> None:
        from mailcli import clock

        self.at = clock.parse_iso(at)

    def __call__(self) -> Any:
        return self.at

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self.at = self.at + timedelta(**delta)


def freeze(monkeypatch: Any, at: str = NOW) -> FrozenClock:
    from mailcli import clock

    frozen = FrozenClock(at)
    monkeypatch.setattr(clock, "now", frozen)
    return frozen


def ago(days: float, at: str = NOW) -> str:
    from datetime import timedelta

    from mailcli import clock

    return clock.to_iso(clock.parse_iso(at) - timedelta(days=days))


ZEB = "Zebedeus.Quiggleworth@Bücher-Quiggle.example"
ZEB_FORMS = (
    "zebedeus.quiggleworth@bücher-quiggle.example",
    "zebedeus.quiggleworth@xn--bcher-quiggle-wob.example",
    "zebedeus.quiggleworth",
    "Zebedeus", "Quiggleworth",
)


def report_totals(conn: sqlite3.Connection, campaign_id: int) -> dict[str, int]:
    """What ``report`` shows: archived counts plus the live delivery/event counts."""
    from mailcli.store.archive import REPORT_KEYS, archived_counts

    totals = archived_counts(conn, campaign_id)
    for status, n in conn.execute("SELECT status, count(*) FROM deliveries WHERE campaign_id = ? GROUP BY status",
                                  (campaign_id,)):
        totals["uncertain" if status == "sending" else status] += n
        totals["audience"] += n
    for kind, n in conn.execute("SELECT kind, count(*) FROM events WHERE campaign_id = ? GROUP BY kind",
                                (campaign_id,)):
        if kind in REPORT_KEYS:
            totals[kind] += n
    return totals
