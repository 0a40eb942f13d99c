"""What a send knows about its relay before it connects, and keeps of what it
learnt for the next run (docs/guarantees.md#relay-limits).

The configuration (or the command's ``--concurrency``/``--rate``) is the
ceiling; a connection limit or rate the relay held an earlier run to is
where the next one starts (``store.relays``). A remembered rate ages: it
doubles for every hour since it was kept and is ignored after a day.
"""

from __future__ import annotations

from mailcli import clock
from mailcli.config import Settings
from mailcli.errors import ConfigError
from mailcli.send.connections import Connections
from mailcli.send.plan import SendOptions
from mailcli.send.results import SendSummary
from mailcli.send.smtp import ConnectParams, default_local_hostname
from mailcli.send.transport import SmtpTransport, TransportOptions
from mailcli.store import Store
from mailcli.store.relays import RelayMemory, save_relay


def smtp_password(settings: Settings) -> str | None:
    """The SMTP password from the variable [smtp] password_env names; None
    without a username; a ``ConfigError`` when a username is set and the variable is not."""
    smtp = settings.smtp
    password = smtp.password() if smtp.username else None
    if smtp.username and password is None:
        raise ConfigError(
            f"[smtp] username is set but the password variable {smtp.password_env} is not",
            hint=f"export {smtp.password_env}=... (the password never goes in mailcli.toml)",
        )
    return password


# Complexity: one branch per setting and per limit learnt from the relay, the lower winning.
def transport_options(settings: Settings, options: SendOptions, relay: RelayMemory | None = None,
                      expected: int | None = None) -> TransportOptions:
    """How to connect, how many connections and how fast."""
    smtp = settings.smtp
    password = smtp_password(settings)
    params = ConnectParams(
        host=smtp.host, port=smtp.port, security=smtp.security, username=smtp.username, password=password,
        timeout=smtp.timeout, ca_file=str(smtp.ca_file) if smtp.ca_file else None,
        local_hostname=smtp.helo_name or default_local_hostname(),
    )
    rate = smtp.rate if options.rate is None else options.rate
    rate_ceiling = None
    remembered = remembered_rate(relay)
    if remembered is not None and (rate <= 0 or remembered < rate):
        rate, rate_ceiling = remembered, rate
    return TransportOptions(
        params=params,
        concurrency=options.concurrency or smtp.concurrency,
        start_connections=relay.connections_limit if relay is not None else None,
        expected=expected,
        rate=rate,
        rate_ceiling=rate_ceiling,
        retry_window=smtp.retry_window,
        domain_concurrency=smtp.domain_concurrency,
        connect_backoff=smtp.connect_backoff,
    )


# A remembered rate doubles for every hour since it was found (a relay's
# limits are counted per second, minute or hour, and change): after a day it
# is no longer worth anything. Its age is its own: recording something else
# about the relay later does not make it young again.
REMEMBERED_RATE_HOURS = 24


def remembered_rate(relay: RelayMemory | None) -> float | None:
    """Where a rate an earlier run was held to starts this run: the rate kept,
    doubled for every full hour since it was found; None when none is kept or
    it is a day old."""
    if relay is None or not relay.rate_limit:
        return None
    try:
        age = (clock.now() - clock.parse_iso(relay.rate_found_at or relay.updated_at)).total_seconds()
    except ValueError:
        age = 0.0
    hours = max(0, int(age // 3600))
    if hours >= REMEMBERED_RATE_HOURS:
        return None
    return float(relay.rate_limit) * 2 ** hours


def remember_relay(store: Store, settings: Settings, before: RelayMemory | None, transport: SmtpTransport,
                   summary: SendSummary, concurrency: int) -> None:
    """Keep what this run learnt about the relay for the next one, and say it in the summary.

    A limit found now replaces the old one; a run that worked with more
    connections than the remembered limit raises it, or forgets it once the
    configured number worked. The rate is kept while the relay holds us below
    the configured one.
    """
    found, pace = transport.connections, transport.pace
    limit = _connections_limit(before, found, concurrency)
    if found.limit_found is not None:
        summary.connections_note = found.limit_reply
    rate = pace.rate_in_effect
    if pace.rate_found is not None:
        summary.rate_note = pace.rate_reply
    summary.quota_note = transport.quota_reply
    summary.connections_limit = limit
    summary.rate_limit = rate
    changed = (before is None or limit != before.connections_limit or rate != before.rate_limit)
    if changed and (before is not None or limit is not None or rate is not None):
        smtp = settings.smtp
        with store.transaction() as conn:
            save_relay(conn, smtp.host, smtp.port, smtp.username, connections_limit=limit, rate_limit=rate)


def _connections_limit(before: RelayMemory | None, found: Connections, concurrency: int) -> int | None:
    limit: int | None = before.connections_limit if before is not None else None
    if found.limit_found is not None:
        return found.limit
    if limit is not None and found.max_working > limit:
        return None if found.max_working >= concurrency else found.max_working
    return limit


def remember_smtputf8(store: Store, settings: Settings, before: RelayMemory | None, offered: bool) -> None:
    """Whether the relay offers SMTPUTF8, when that is news."""
    if before is None or before.smtputf8 != offered:
        smtp = settings.smtp
        with store.transaction() as conn:
            save_relay(conn, smtp.host, smtp.port, smtp.username, smtputf8=offered)
