"""``mailcli doctor``: configuration, SMTP and DNS checks with a verdict and a fix each."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .. import context
from ..deliverability.check import Check, has_failures
from ..deliverability.doctor import run_doctor
from ..errors import MailcliError


def format_check(check: Check) -> str:
    """``PASS   name  summary``, then the fix indented under it."""
    lines = [f"{check.verdict.upper():<6} {check.name:<16} {check.summary}"]
    if check.fix and check.verdict != "pass":
        first, *rest = check.fix.splitlines()
        lines.append(f"{'':7}fix: {first}")
        lines += [f"{'':12}{part}" for part in rest]
    return "\n".join(lines)


def doctor_cmd(
    ctx: typer.Context,
    dns: Annotated[
        bool,
        typer.Option(
            "--dns", help="Check MX, SPF, DKIM, DMARC and alignment of the sender domain."
        ),
    ] = False,
    smtp: Annotated[
        bool,
        typer.Option(
            "--smtp", help="Connect to the SMTP server: TLS, certificate, AUTH (sends no mail)."
        ),
    ] = False,
    nameserver: Annotated[
        str | None,
        typer.Option(
            "--nameserver",
            help="Ask this DNS server instead of the system's.",
            metavar="HOST[:PORT]",
        ),
    ] = None,
    dkim_selector: Annotated[
        str | None,
        typer.Option(
            "--dkim-selector",
            help="DKIM selector to check (default: dkim.selector of the config).",
            metavar="S",
        ),
    ] = None,
) -> None:
    """Check configuration, SMTP and DNS, each with a verdict and the fix.

    Exit 1 when any check fails or could not run, 0 when there are only
    warnings. Doctor only reads: it changes no DNS and sends no mail.

    Examples:

        mailcli doctor

        mailcli doctor --dns --smtp

        mailcli doctor --dns --dkim-selector s1 --json
    """
    app = context.get(ctx)
    checks = run_doctor(
        app.settings, dns=dns, smtp=smtp, nameserver=nameserver, dkim_selector=dkim_selector
    )
    # Quiet (cron, CI): only what needs someone's attention.
    shown = [c for c in checks if c.verdict in ("fail", "error")] if app.out.quiet else checks
    text = "\n".join(format_check(check) for check in shown)
    if app.out.json or text:
        app.out.data([check.to_dict() for check in checks], text=text)
    _verdict(app.out, checks, configuration_only=not (dns or smtp))


def _verdict(out: Any, checks: list[Check], *, configuration_only: bool) -> None:
    """The count of each verdict; a MailcliError (exit 1) when a check failed or could not run."""
    counts = {v: sum(1 for c in checks if c.verdict == v) for v in ("pass", "warn", "fail", "error")}
    out.info(", ".join(f"{n} {v}" for v, n in counts.items() if n))
    if configuration_only:
        out.info("Configuration only; run `mailcli doctor --dns --smtp` to check DNS and the SMTP server too")
    if has_failures(checks):
        raise MailcliError(f"{counts['fail'] + counts['error']} check(s) failed or could not run",
                           hint="the fix is under each FAIL line; an ERROR (DNS did not answer) may pass on a rerun")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_cmd)
