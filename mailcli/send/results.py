"""What a send is about to do (``SendPlan``, shown before the confirmation)
and what it did (``SendSummary``, counted as results come in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mailcli.addresses import mask_address
from mailcli.errors import MailcliError, TemplateError


@dataclass(frozen=True, slots=True)
class TemplateChange:
    """A resumed campaign whose template is not the version its first
    messages were sent from: the rest of its audience gets another text."""

    template: str
    sent_first: int  # messages sent from the version of the campaign's first run
    sent: int  # messages sent so far, from any version
    left: int  # messages left to send, which get the version saved now
    first_version: str  # ``CompiledTemplate.version`` of the first run's template
    version: str  # and of the template as it is now


@dataclass(frozen=True, slots=True)
class SendPlan:
    """What a run is about to do; shown before the confirmation."""

    campaign: str
    template: str
    list_name: str
    created: bool
    audience: int  # deliveries in the campaign
    added: int  # rows frozen now (first run or --include-new)
    to_send: int  # this run (after --limit)
    uncertain: int
    server: str
    dry_run: bool
    uncertain_causes: dict[str, int] = field(default_factory=dict)  # killed / lost / other
    accepted_uncertain: int = 0  # uncertain messages counted as sent (--accept-uncertain)
    kind: str = "marketing"  # or "service"
    reason: str | None = None  # why a service message goes out
    segment: str | None = None  # the segment's name, or its expression
    no_basis: int = 0  # members of the list left out now: no lawful basis recorded
    template_change: TemplateChange | None = None  # the template changed since the first run sent


@dataclass(slots=True)
class SendSummary:
    campaign: str
    dry_run: bool
    attempted: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    uncertain: int = 0
    skipped: int = 0
    rendered: int = 0
    no_basis: int = 0  # members of the list the freeze left out: no lawful basis recorded
    interrupted: bool = False
    elapsed: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)  # report keys after the run
    uncertain_causes: dict[str, int] = field(default_factory=dict)  # of the campaign after the run
    problems: list[str] = field(default_factory=list)  # first few per-contact failures
    relay: str = ""  # host:port
    connections_limit: int | None = None  # the relay's connection limit, found now or before
    connections_note: str | None = None  # the reply that showed it, when found in this run
    rate_limit: float | None = None  # messages/s the relay held us to, found now or before
    rate_note: str | None = None
    quota_note: str | None = None  # the relay's reply when the day's sending quota ran out
    skipped_smtputf8: int = 0  # skipped: the relay does not offer SMTPUTF8 (counted in skipped)
    # Failures the template causes, not the contact: message (naming the
    # file and line) -> how many messages it failed.
    template_errors: dict[str, int] = field(default_factory=dict)
    # This run found the campaign done and marked it so (once, of all its runs).
    completed: bool = False
    # Messages the other senders of a shared campaign settled since this run
    # began (PostgreSQL), so a progress bar shows the whole campaign's progress.
    others: int = 0
    # Set when the run sent nothing because the campaign's moment has not come.
    not_before: datetime | None = None
    # The template changed since the campaign's first run sent: this run sends another version.
    template_change: TemplateChange | None = None

    def note_failure(self, email: str, exc: Exception) -> str:
        """Count one failed message; returns the reason to record."""
        problem, template = problem_of(exc)
        self.note_problem(email, problem, template=template)
        return problem

    def note_problem(self, email: str, problem: str, *, template: bool) -> None:
        """:meth:`note_failure` for a problem already described (by a render
        worker); ``template``: the template caused it, not the contact."""
        if template:
            self.template_errors[problem] = self.template_errors.get(problem, 0) + 1
        elif len(self.problems) < 5:
            self.problems.append(masked_problem(email, problem))

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


ProgressFn = Callable[[SendSummary], None]
ConfirmFn = Callable[[SendPlan], None]
# How a freeze of the audience goes: (members read so far, about how many in
# all or None when not known, whether they are written or only counted).
# Called once before the first member and after every page.
FreezeFn = Callable[[int, int | None, bool], None]


def masked_problem(email: str, problem: str) -> str:
    """``a***@example.nl: reason`` for status lines, the address masked in the reason too
    (a server's reply or a check often repeats it)."""
    masked = mask_address(email)
    text = problem
    for variant in {email, email.lower()}:
        text = text.replace(variant, masked)
    return f"{masked}: {text}"


def problem_of(exc: Exception) -> tuple[str, bool]:
    """Why a message could not be built, and whether its template caused it (not the contact's data)."""
    text = exc.message if isinstance(exc, MailcliError) else f"{type(exc).__name__}: {exc}"
    return text, isinstance(exc, TemplateError)
