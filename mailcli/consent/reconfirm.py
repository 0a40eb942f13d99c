"""``mailcli reconfirm --list L``: ask the members who have no lawful basis, or
never confirmed, to confirm, with the confirmation mail of the sign-up form.

It is a campaign of kind ``service`` (``reconfirm-LIST`` unless named) in the
send ledger, so it has a send's guarantees:

* **Exactly once.** The first run freezes who is asked: one delivery and one
  sign-up (whose link the mail carries) per member. Each message is marked
  ``sending`` in a committed transaction right before its final dot, and
  ``sent`` after the server's reply; a run killed in between leaves it
  ``uncertain`` (``ledger.recover_interrupted``), never sent again. A rerun
  sends only what is still pending or deferred, and asks members who lost
  their basis since, once.
* **Resumable.** 4xx replies and an unreachable relay leave messages
  ``deferred`` for the next run; ``report CAMPAIGN`` counts them, and how
  many confirmed.
* One run at a time per campaign (the send's campaign lock).
* **Asked first.** Who would be asked is counted from a freeze that is
  rolled back: a dry run stops there (nothing sent, nothing changed), and a
  caller's ``confirm`` sees the numbers before anything is written.

A confirmation through the link makes the membership ``subscribed`` with
basis ``consent`` (method ``double opt-in``), like a sign-up's.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import clock
from ..config import Settings
from ..errors import UsageError
from ..locks import campaign_lock
from ..store import Store
from ..store import deliveries as delivery_rows
from ..store import signups as rows
from ..store.audience import list_not_found
from ..store.campaigns import Campaign, get_campaign, insert_campaign
from ..store.lists import list_id as find_list
from ..tokens import message_id, new_uid
from .flow import consent_wording
from .mailer import MailBuilder, deliver

if TYPE_CHECKING:
    from ..store.db import Connection

BATCH = 50  # messages per SMTP session
# Why this service message reaches people: what `campaigns` and `report` show.
REASON = "reconfirmation: asks members without a lawful basis, or unconfirmed, to confirm their subscription"


@dataclass(slots=True)
class ReconfirmResult:
    campaign: str
    list_name: str
    added: int = 0  # members asked for the first time by this run
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # the campaign's report after the run
    dry_run: bool = False
    would_ask: int = 0  # a dry run: the mails a real run would send now

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"campaign": self.campaign, "list": self.list_name, "dry_run": self.dry_run,
                                "added": self.added}
        if self.dry_run:
            return {**data, "would_ask": self.would_ask}
        return {**data, "sent": self.sent, "failed": self.failed, "deferred": self.deferred,
                "campaign_totals": self.counts}


@dataclass(frozen=True, slots=True)
class ReconfirmPlan:
    """What a run would do, counted before anything is written."""

    campaign: str
    list_name: str
    to_ask: int  # mails to send now: members asked for the first time, and those deferred
    added: int  # of them, members asked for the first time
    server: str


class _Rehearsed(Exception):
    """Raised inside the freeze's transaction to undo it, with the plan."""

    def __init__(self, plan: ReconfirmPlan) -> None:
        self.plan = plan


def reconfirm_list(store: Store, settings: Settings, list_name: str, *, campaign: str | None = None,
                   progress: Callable[[int, int], None] | None = None, dry_run: bool = False,
                   confirm: Callable[[ReconfirmPlan], None] | None = None) -> ReconfirmResult:
    """Ask a list's members without a basis, or unconfirmed, to confirm; resumes an earlier run.

    ``dry_run``: count who would be asked, send nothing and change nothing.
    ``confirm(plan)`` is called before anything is written when there is
    someone to ask; it raises to stop the run."""
    from ..send.ledger import campaign_counts, set_campaign_status

    name = campaign or f"reconfirm-{list_name}"
    result = ReconfirmResult(name, list_name, dry_run=dry_run)
    with campaign_lock(settings, name):
        now = clock.now()
        if dry_run or confirm is not None:
            plan = _rehearse(store, settings, list_name, name, now)
            if dry_run:
                result.added, result.would_ask = plan.added, plan.to_ask
                return result
            if confirm is not None and plan.to_ask:
                confirm(plan)
        with store.transaction() as conn:
            found, result.added, due = _freeze(conn, settings, list_name, name, now)
        builder = MailBuilder(settings)
        total = len(due)
        for start in range(0, total, BATCH):
            _send_batch(store, settings, builder, found.id, due[start:start + BATCH], result)
            if progress is not None:
                progress(min(start + BATCH, total), total)
        with store.transaction() as conn:
            counts = campaign_counts(conn, found)
            set_campaign_status(conn, found.id, counts)
            counts["confirmed"] = rows.confirmed_in(conn, found.id)
        result.counts = counts
    return result


def _rehearse(store: Store, settings: Settings, list_name: str, name: str, now: datetime) -> ReconfirmPlan:
    """The plan of a run, from a freeze that is rolled back."""
    try:
        with store.transaction() as conn:
            _, added, due = _freeze(conn, settings, list_name, name, now)
            raise _Rehearsed(ReconfirmPlan(name, list_name, len(due), added, settings.smtp.address))
    except _Rehearsed as rehearsed:
        return rehearsed.plan


def _freeze(conn: Connection, settings: Settings, list_name: str, name: str,
            now: datetime) -> tuple[Campaign, int, list[tuple[int, rows.DueMail]]]:
    """Create or resume the round, add the members to ask since the last run,
    and return it, how many were added and the mails due now."""
    from ..send.ledger import recover_interrupted

    stamp = clock.to_iso(now)
    list_id = find_list(conn, list_name)
    if list_id is None:
        raise list_not_found(conn, list_name)
    insert_campaign(conn, uid=new_uid(), name=name, template="_confirm", list_id=list_id,
                    list_name=list_name, subject=None, created_at=stamp, kind="service",
                    service_reason=REASON, subject_line=_subject(settings, list_name, now))
    found = get_campaign(conn, name)
    assert found is not None
    if found.template != "_confirm" or found.list_name != list_name:
        raise UsageError(f"Campaign {name!r} is not the reconfirmation of list {list_name!r}",
                         hint="give another name with --campaign")
    language = settings.language(list_name)
    wording = consent_wording(settings, list_name)
    expires = clock.to_iso(now + timedelta(seconds=settings.consent.confirm_within.seconds()))
    added = rows.freeze_reconfirm(
        conn, campaign_id=found.id, list_id=list_id,
        message_ids=lambda uid: message_id(found.uid, uid, settings.sender.domain),
        nonce=lambda: secrets.token_hex(9), form=f"reconfirm {name}", language=language,
        text_hash=rows.store_consent_text(conn, wording, language, stamp), now=stamp, expires_at=expires)
    recover_interrupted(conn, found.id)
    return found, added, rows.reconfirm_due(conn, found.id, ("pending", "deferred"))


def _subject(settings: Settings, list_name: str, now: Any) -> str | None:
    """The subject of the round's mails, as `campaigns` shows it (None if it cannot render without a person)."""
    from ..errors import MailcliError
    from ..render import RenderContext, compile_template
    from ..render.preview import sender_from_settings
    from .mailer import confirm_template_dir

    language = settings.language(list_name)
    try:
        folder, name = confirm_template_dir(settings, language)
        ctx = RenderContext(contact={"email": "", "first_name": "", "last_name": ""},
                            campaign={"name": list_name, "subject": ""}, sender=sender_from_settings(settings),
                            unsubscribe_url="", now=now, confirm_url="", language=language)
        return str(compile_template(folder, name).variables(ctx)["campaign"]["subject"]) or None
    except MailcliError:
        return None


# Complexity: each message's outcome mapped to the ledger's status, the sending mark deciding uncertain.
def _send_batch(store: Store, settings: Settings, builder: MailBuilder, campaign_id: int,
                batch: list[tuple[int, rows.DueMail]], result: ReconfirmResult) -> None:
    deliveries = {id(mail): delivery for delivery, mail in batch}
    messages = [(mail, builder.build(mail)) for _, mail in batch]
    marked: set[int] = set()

    def before_dot(mail: rows.DueMail) -> bool:
        with store.transaction() as conn:
            ok = delivery_rows.mark_sending(conn, deliveries[id(mail)], ("pending", "deferred"), clock.now_iso())
        if ok == "ok":
            marked.add(id(mail))
        return ok == "ok"

    outcomes = asyncio.run(deliver(settings, messages, before_dot))
    for mail, problem, permanent in outcomes:
        status = "sent" if problem is None else ("failed" if permanent else "deferred")
        if problem is not None and id(mail) in marked and not permanent:
            status = "uncertain"  # the dot may have reached the server: never sent again
        with store.transaction() as conn:
            delivery_rows.record_result(conn, campaign_id, deliveries[id(mail)], "sending" if status == "uncertain"
                                        else status, problem or "250 accepted", clock.now_iso(),
                                        was_sending=id(mail) in marked)
        if status == "sent":
            result.sent += 1
        elif status == "failed":
            result.failed += 1
        else:
            result.deferred += 1
