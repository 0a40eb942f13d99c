"""Click counts: the tracked links of each campaign, how often each was
clicked, and — only with ``[tracking] per_contact`` — who clicked when.

A link's number is what a click token names (``tokens.make_click_token``);
serve redirects to the URL stored here for it, so a request can never bring
its own destination (no open redirect). Numbers are given once per campaign
and URL and never change, so a resumed send and a reprinted message keep
their links. The count on ``campaign_links`` holds no person; a row of
``clicks`` names a contact, its time and the client's network, and goes with
the contact on erasure (foreign key) or with ``[retention] clicks``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass


def register_links(conn: sqlite3.Connection, campaign_id: int, urls: Iterable[str], now: str) -> None:
    """Give each URL not yet known for the campaign the next link number."""
    for url in urls:
        conn.execute(
            "INSERT INTO campaign_links (campaign_id, link_no, url, created_at)"
            " SELECT ?, coalesce(max(link_no), 0) + 1, ?, ? FROM campaign_links WHERE campaign_id = ?"
            " ON CONFLICT DO NOTHING",
            (campaign_id, url, now, campaign_id),
        )


def link_numbers(conn: sqlite3.Connection, campaign_id: int) -> dict[str, int]:
    """URL -> link number of every tracked link of the campaign."""
    return {url: no for no, url in conn.execute(
        "SELECT link_no, url FROM campaign_links WHERE campaign_id = ?", (campaign_id,))}


def link_url(conn: sqlite3.Connection, campaign_id: int, link_no: int) -> str | None:
    """The URL a link number stands for, or None."""
    row = conn.execute("SELECT url FROM campaign_links WHERE campaign_id = ? AND link_no = ?",
                       (campaign_id, link_no)).fetchone()
    return None if row is None else str(row[0])


def record_click(conn: sqlite3.Connection, campaign_id: int, link_no: int, at: str, *,
                 contact_uid: str | None = None, ip_network: str | None = None) -> bool:
    """Count a click on the link; with ``contact_uid``, also record who (and
    count it as their activity). False when the link is unknown. A contact
    erased since is counted on the link only."""
    counted = conn.execute(
        "UPDATE campaign_links SET clicks = clicks + 1, first_click_at = coalesce(first_click_at, ?),"
        " last_click_at = ? WHERE campaign_id = ? AND link_no = ?",
        (at, at, campaign_id, link_no),
    ).rowcount
    if not counted:
        return False
    if contact_uid is not None:
        conn.execute(
            "INSERT INTO clicks (campaign_id, link_no, contact_id, clicked_at, ip_network)"
            " SELECT ?, ?, id, ?, ? FROM contacts WHERE uid = ?",
            (campaign_id, link_no, at, ip_network, contact_uid),
        )
        conn.execute("UPDATE contacts SET last_activity_at = max(last_activity_at, ?) WHERE uid = ?",
                     (at, contact_uid))
    return True


@dataclass(frozen=True, slots=True)
class LinkClicks:
    """One tracked link of a campaign and its clicks."""

    link_no: int
    url: str
    clicks: int
    first_click_at: str | None
    last_click_at: str | None
    people: int | None  # distinct contacts who clicked, where per-contact clicks are kept

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"link": self.link_no, "url": self.url, "clicks": self.clicks,
                                   "first_click_at": self.first_click_at, "last_click_at": self.last_click_at}
        if self.people is not None:
            data["people"] = self.people
        return data


def campaign_link_clicks(conn: sqlite3.Connection, campaign_id: int) -> list[LinkClicks]:
    """Every tracked link of the campaign with its clicks, most clicked first;
    where per-contact clicks of the campaign are held, also how many distinct
    contacts clicked each."""
    people = conn.execute("SELECT 1 FROM clicks WHERE campaign_id = ? LIMIT 1", (campaign_id,)).fetchone() is not None
    rows = conn.execute(
        "SELECT l.link_no, l.url, l.clicks, l.first_click_at, l.last_click_at,"
        " CASE WHEN ? THEN (SELECT count(DISTINCT k.contact_id) FROM clicks k"
        "   WHERE k.campaign_id = l.campaign_id AND k.link_no = l.link_no) END"
        " FROM campaign_links l WHERE l.campaign_id = ? ORDER BY l.clicks DESC, l.link_no",
        (people, campaign_id),
    ).fetchall()
    return [LinkClicks(*row) for row in rows]


def contact_clicks(conn: sqlite3.Connection, contact_id: int) -> list[dict[str, object]]:
    """One contact's recorded clicks: campaign, link, time and network (for an export)."""
    cursor = conn.execute(
        "SELECT c.name, l.url, k.clicked_at, k.ip_network FROM clicks k"
        " JOIN campaigns c ON c.id = k.campaign_id"
        " JOIN campaign_links l ON l.campaign_id = k.campaign_id AND l.link_no = k.link_no"
        " WHERE k.contact_id = ? ORDER BY k.clicked_at, k.id",
        (contact_id,),
    )
    return [{"campaign": name, "url": url, "clicked_at": at, "ip_network": ip} for name, url, at, ip in cursor]


def count_clicks_before(conn: sqlite3.Connection, cutoff: str) -> int:
    """Per-contact clicks older than ``cutoff`` (restricted contacts' are kept)."""
    return int(conn.execute(f"SELECT count(*) FROM clicks WHERE {_OLD_CLICKS}", (cutoff,)).fetchone()[0])  # noqa: S608


def delete_clicks_before(conn: sqlite3.Connection, cutoff: str) -> int:
    """Delete per-contact clicks older than ``cutoff``; the per-link counts stay."""
    return int(conn.execute(f"DELETE FROM clicks WHERE {_OLD_CLICKS}", (cutoff,)).rowcount)  # noqa: S608


# Restriction (art. 18) means "keep, do not use": a restricted contact's clicks stay.
_OLD_CLICKS = "clicked_at < ? AND contact_id IN (SELECT id FROM contacts WHERE restricted_at IS NULL)"
