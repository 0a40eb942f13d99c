"""Deliverability: will receivers accept our mail? (``mailcli doctor``, DKIM, MX)

- ``dns_checks`` / ``spf``: MX, SPF, DKIM key, DMARC and alignment of the sender domain;
- ``smtp_check``: the relay's TLS, certificate, extensions and AUTH, sending nothing;
- ``config_check``: risky but valid settings (secret backup, file modes, DKIM key);
- ``doctor``: all of them for one configuration, as ``Check`` verdicts;
- ``dkim``: ``DkimSigner`` / ``load_signer``, used by the send engine as its last step;
- ``mx``: ``check_domains`` for ``import --check-mx``.

Everything here is core code: no typer or rich, errors as ``MailcliError``.
"""
