"""Helpers for the feedback tests: a project with contacts, lists and a sent campaign.

Rows are written with plain SQL in the schema's own shape, so the feedback
tests do not depend on the import and send commands; the end-to-end tests use
those commands where they exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mailcli import clock, tokens
from mailcli.config import Settings, load_settings
from mailcli.store import Store, open_store


@dataclass
class Seeded:
    settings: Settings
    store: Store
    list_ids: dict[str, int]
    contacts: dict[str, int]  # email -> contact id
    uids: dict[str, str]  # email -> contact uid

    def token(self, email: str, list_name: str = "news") -> str:
        return tokens.make_unsubscribe_token(self.settings.secret(), self.uids[email], self.list_ids[list_name])

    def membership(self, email: str, list_name: str = "news") -> tuple[str, str | None, str | None]:
        row = self.store.conn.execute(
            "SELECT status, unsubscribed_at, unsubscribe_channel FROM memberships WHERE contact_id = ? AND list_id = ?",
            (self.contacts[email], self.list_ids[list_name]),
        ).fetchone()
        return tuple(row) if row else ("missing", None, None)

    def contact(self, email: str) -> dict[str, object] | None:
        row = self.store.conn.execute(
            "SELECT status, no_marketing_at FROM contacts WHERE email_key = ?", (email.lower(),)
        ).fetchone()
        return {"status": row[0], "no_marketing_at": row[1]} if row else None

    def suppressions(self, email: str) -> dict[str, str]:
        digest = tokens.address_hmac(self.settings.secret(), email.lower())
        rows = self.store.conn.execute("SELECT scope, reason FROM suppressions WHERE hmac = ?", (digest,))
        return {scope: reason for scope, reason in rows}

    def events(self, kind: str | None = None) -> list[tuple[object, ...]]:
        sql = "SELECT contact_id, campaign_id, kind, channel, scope FROM events"
        params: tuple[object, ...] = ()
        if kind:
            sql += " WHERE kind = ?"
            params = (kind,)
        return [tuple(r) for r in self.store.conn.execute(sql + " ORDER BY id", params)]

    def counts(self) -> dict[str, int]:
        out = {}
        for table in ("events", "suppressions", "audit_log"):
            out[table] = int(self.store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
        out["unsubscribed"] = int(self.store.conn.execute(
            "SELECT count(*) FROM memberships WHERE status = 'unsubscribed'").fetchone()[0])
        return out


def seed(root: Path, emails: list[str], lists: tuple[str, ...] = ("news",)) -> Seeded:
    settings = load_settings(root / "mailcli.toml")
    store = open_store(settings.project.database)
    now = clock.now_iso()
    list_ids: dict[str, int] = {}
    contacts: dict[str, int] = {}
    uids: dict[str, str] = {}
    with store.transaction() as conn:
        for name in lists:
            row = conn.execute("SELECT id FROM lists WHERE name = ?", (name,)).fetchone()
            if row is None:
                cur = conn.execute("INSERT INTO lists (name, created_at) VALUES (?, ?)", (name, now))
                list_ids[name] = int(cur.lastrowid or 0)
            else:
                list_ids[name] = int(row[0])
        for email in emails:
            uid = tokens.new_uid()
            cur = conn.execute(
                "INSERT INTO contacts (uid, email, email_key, first_name, attributes, status, created_at, updated_at,"
                " last_activity_at) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?)",
                (uid, email, email.lower(), email.split("@")[0].title(), json.dumps({}), now, now, now),
            )
            contacts[email] = int(cur.lastrowid or 0)
            uids[email] = uid
            for name in lists:
                conn.execute(
                    "INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_at, created_at,"
                    " updated_at, basis) VALUES (?, ?, 'subscribed', 'test.csv', ?, ?, ?, 'consent')",
                    (contacts[email], list_ids[name], now, now, now),
                )
    return Seeded(settings, store, list_ids, contacts, uids)


def add_campaign(seeded: Seeded, name: str, list_name: str = "news", emails: list[str] | None = None) -> tuple[int, dict[str, str]]:
    """A sent campaign: returns its id and the Message-ID of each message."""
    now = clock.now_iso()
    uid = tokens.new_uid()
    message_ids: dict[str, str] = {}
    with seeded.store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO campaigns (uid, name, template, list_id, list_name, subject, status, created_at, frozen_at,"
            " finished_at) VALUES (?, ?, 'newsletter', ?, ?, 'Hello', 'finished', ?, ?, ?)",
            (uid, name, seeded.list_ids[list_name], list_name, now, now, now),
        )
        campaign_id = int(cur.lastrowid or 0)
        for email in emails if emails is not None else list(seeded.contacts):
            mid = tokens.message_id(uid, seeded.uids[email], seeded.settings.sender.domain)
            message_ids[email] = mid
            conn.execute(
                "INSERT INTO deliveries (campaign_id, contact_id, status, message_id, attempts, created_at, updated_at,"
                " sent_at) VALUES (?, ?, 'sent', ?, 1, ?, ?, ?)",
                (campaign_id, seeded.contacts[email], mid, now, now, now),
            )
    return campaign_id, message_ids
