"""The opt-out records behind every channel: one transaction, idempotent, never lost."""

from __future__ import annotations

from pathlib import Path

from mailcli.feedback import actions
from mailcli.privacy import auditlog
from mailcli.store import audit as audit_rows
from tests.feedback.test_feedback_support import add_campaign, seed


def test_list_unsubscribe_records_time_channel_scope_and_suppression(project: Path) -> None:
    s = seed(project, ["ann@example.org", "bob@example.org"], lists=("news", "events"))
    campaign, _ = add_campaign(s, "may")
    assert actions.unsubscribe(s.store, s.settings, s.contacts["ann@example.org"], list_id=s.list_ids["news"],
                               channel="one-click", campaign_id=campaign)
    status, at, channel = s.membership("ann@example.org")
    assert (status, channel) == ("unsubscribed", "one-click") and at and at.endswith("Z")
    # only that list: the other list and the person-level flags stay
    assert s.membership("ann@example.org", "events")[0] == "subscribed"
    assert s.contact("ann@example.org") == {"status": "active", "no_marketing_at": None}
    assert s.suppressions("ann@example.org") == {"news": "unsubscribed"}
    assert s.events("unsubscribed") == [(s.contacts["ann@example.org"], campaign, "unsubscribed", "one-click", "news")]
    assert s.membership("bob@example.org")[0] == "subscribed"
    rows = list(audit_rows.chain_rows(s.store.conn))
    assert rows[-1][4] == "unsubscribe" and "ann@example.org" not in str(rows[-1])
    assert auditlog.verify(s.store, s.settings).problems == ()


def test_repeat_changes_nothing_and_keeps_the_first_record(project: Path, monkeypatch) -> None:
    s = seed(project, ["ann@example.org"])
    cid, lid = s.contacts["ann@example.org"], s.list_ids["news"]
    assert actions.unsubscribe(s.store, s.settings, cid, list_id=lid, channel="mailto")
    first = s.membership("ann@example.org")
    before = s.counts()
    from datetime import datetime, timezone

    monkeypatch.setattr("mailcli.clock.now", lambda: datetime(2031, 1, 1, tzinfo=timezone.utc))
    assert not actions.unsubscribe(s.store, s.settings, cid, list_id=lid, channel="one-click")
    assert s.membership("ann@example.org") == first
    assert s.counts() == before


def test_all_marketing_sets_objection_flag_and_global_suppression(project: Path) -> None:
    s = seed(project, ["ann@example.org"], lists=("news", "events"))
    assert actions.unsubscribe(s.store, s.settings, s.contacts["ann@example.org"], channel="cli")
    assert s.membership("ann@example.org", "news")[0] == "unsubscribed"
    assert s.membership("ann@example.org", "events")[0] == "unsubscribed"
    contact = s.contact("ann@example.org")
    assert contact and contact["status"] == "unsubscribed" and contact["no_marketing_at"]
    assert s.suppressions("ann@example.org") == {"*": "unsubscribed"}
    # consent evidence is kept
    row = s.store.conn.execute("SELECT consent_source, consent_at FROM memberships").fetchone()
    assert row[0] == "test.csv" and row[1]


def test_hard_bounce_suppresses_everything(project: Path) -> None:
    s = seed(project, ["ann@example.org"])
    campaign, _ = add_campaign(s, "may")
    result = actions.record_bounce(s.store, s.settings, s.contacts["ann@example.org"], hard=True,
                                   campaign_id=campaign, status="5.1.1")
    assert result.suppressed and result.changed
    assert s.contact("ann@example.org")["status"] == "bounced"  # type: ignore[index]
    assert s.suppressions("ann@example.org") == {"*": "bounced"}
    assert s.events("bounced") == [(s.contacts["ann@example.org"], campaign, "bounced", "bounce", "*")]


def test_soft_bounces_suppress_only_past_the_limit_of_distinct_campaigns(project: Path) -> None:
    s = seed(project, ["ann@example.org"])
    cid = s.contacts["ann@example.org"]
    assert s.settings.bounces.soft_limit == 3
    first, _ = add_campaign(s, "c1")
    second, _ = add_campaign(s, "c2")
    third, _ = add_campaign(s, "c3")
    # a delay notice and the final soft failure of one campaign count once
    for campaign in (first, first, second):
        result = actions.record_bounce(s.store, s.settings, cid, hard=False, campaign_id=campaign, status="4.2.2")
        assert not result.suppressed
    assert s.suppressions("ann@example.org") == {}
    assert s.contact("ann@example.org")["status"] == "active"  # type: ignore[index]
    result = actions.record_bounce(s.store, s.settings, cid, hard=False, campaign_id=third, status="4.4.1")
    assert result.suppressed and result.soft_count == 3
    assert s.suppressions("ann@example.org") == {"*": "bounced"}
    # the escalation is not attributed to the campaign: report counts it once, as soft
    assert [e for e in s.events("bounced")] == [(cid, None, "bounced", "bounce", "*")]


def test_complaint_suppresses_all_marketing(project: Path) -> None:
    s = seed(project, ["ann@example.org"], lists=("news", "events"))
    campaign, _ = add_campaign(s, "may")
    assert actions.record_complaint(s.store, s.settings, s.contacts["ann@example.org"], campaign_id=campaign)
    contact = s.contact("ann@example.org")
    assert contact and contact["status"] == "complained" and contact["no_marketing_at"]
    assert s.suppressions("ann@example.org") == {"*": "complained"}
    assert s.membership("ann@example.org", "events")[:3:2] == ("unsubscribed", "complaint")
    assert s.events("complained") == [(s.contacts["ann@example.org"], campaign, "complained", "complaint", "*")]


def test_unknown_address_is_still_suppressed(project: Path) -> None:
    s = seed(project, [])
    result = actions.unsubscribe_address(s.store, s.settings, " Zoe@Example.org ")
    assert (result.known, result.changed, result.scope) == (False, True, "*")
    assert s.suppressions("zoe@example.org") == {"*": "unsubscribed"}
    again = actions.unsubscribe_address(s.store, s.settings, "zoe@example.org")
    assert not again.changed


def test_attribution_picks_latest_campaign_on_that_list(project: Path) -> None:
    s = seed(project, ["ann@example.org"], lists=("news", "events"))
    older, _ = add_campaign(s, "c1", "news")
    newer, _ = add_campaign(s, "c2", "news")
    add_campaign(s, "e1", "events")
    s.store.conn.execute("UPDATE deliveries SET sent_at = '2020-01-01T00:00:00Z' WHERE campaign_id = ?", (older,))
    assert actions.latest_campaign(s.store.conn, s.contacts["ann@example.org"], s.list_ids["news"]) == newer
