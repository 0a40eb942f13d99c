"""``mailcli doctor`` as a library call: every check for one configuration.

The configuration checks always run, and so do the look at the Litestream
replica when ``[replicate]`` is set and at a PostgreSQL server's WAL settings; DNS and SMTP checks touch the network and
run only when asked (``--dns``, ``--smtp``). Doctor only reads: it never changes
DNS, sends no mail and prints no secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mailcli.config import Settings
from mailcli.deliverability.check import Check
from mailcli.deliverability.config_check import run_config_checks


def run_doctor(
    settings: Any,
    *,
    dns: bool = False,
    smtp: bool = False,
    nameserver: str | None = None,
    dkim_selector: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Check]:
    """Run the configuration checks, then DNS and SMTP checks when asked."""
    env = os.environ if environ is None else environ
    checks = run_config_checks(settings, env)
    if isinstance(settings, Settings):
        from mailcli.replication import check_replication

        checks += check_replication(settings, env)
        from mailcli.deliverability.server_check import check_server_wal

        checks += check_server_wal(settings)
    if dns:
        checks += dns_checks_for(
            settings, nameserver=nameserver, dkim_selector=dkim_selector, environ=env
        )
    if smtp:
        from mailcli.deliverability.smtp_check import check_smtp

        checks += check_smtp(settings.smtp, environ=env)
    return checks


def dns_checks_for(
    settings: Any,
    *,
    nameserver: str | None,
    dkim_selector: str | None,
    environ: Mapping[str, str],
) -> list[Check]:
    """The DNS checks of the configured sender, DKIM selector and key."""
    from mailcli.deliverability.dkim import load_signer
    from mailcli.deliverability.dns_checks import run_dns_checks
    from mailcli.deliverability.dnsquery import DnsFailure, make_resolver
    from mailcli.errors import MailcliError

    try:
        resolver = make_resolver(nameserver)
    except DnsFailure as exc:
        return [Check("dns", "error", str(exc), "Pass --nameserver HOST[:PORT]", {})]
    dkim = getattr(settings, "dkim", None)
    selector = dkim_selector or (dkim.selector if dkim else None)
    dkim_domain = dkim.domain if dkim else None
    public_key = None
    if dkim is not None:
        try:  # the real key makes the DKIM fix exact; a broken key is reported elsewhere
            signer = load_signer(settings, dict(environ))
            public_key = signer.public_key_b64() if signer else None
        except MailcliError:
            public_key = None
        if dkim_selector and dkim_selector != dkim.selector:
            public_key = None  # another selector: another key
    return run_dns_checks(
        resolver,
        from_address=settings.sender.from_address,
        bounce_address=settings.sender.bounce_address,
        dkim_domain=dkim_domain,
        dkim_selector=selector,
        dkim_public_key=public_key,
        smtp_host=settings.smtp.host,
    )
