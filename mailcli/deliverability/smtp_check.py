"""``doctor --smtp``: can mailcli reach, encrypt to and log in to the relay,
and how many connections at once does it take?

It uses the SMTP client ``send`` uses (``mailcli.send.smtp``), step by step,
so what doctor says is what a send will meet: connect (with implicit TLS),
greeting and EHLO, STARTTLS with certificate and host name verified
(``ssl.create_default_context()`` plus ``ca_file``, TLS 1.2 or newer) and
EHLO again (capabilities from before TLS are discarded), then SIZE,
SMTPUTF8, PIPELINING and the AUTH mechanisms, and AUTH itself when a
username is set. With ``[smtp] concurrency`` above one it then opens that
many connections at once and says how many the relay accepted, so a
connection limit shows before the first campaign. It sends no mail
(docs/guarantees.md#tls).

The password is read from the environment variable ``password_env`` names
and is never printed; the protocol log never holds it. AUTH is never
attempted without TLS except to a loopback host.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from typing import Any

from mailcli.deliverability.check import Check
from mailcli.net import is_loopback, tls_context
from mailcli.send.smtp import (
    AuthRefused,
    ConnectParams,
    NoAuthMechanism,
    SmtpConnectFailed,
    SmtpConnection,
    SmtpFatal,
    default_local_hostname,
)

#: Cap the wait for a dead relay: doctor runs in CI and cron.
MAX_TIMEOUT = 15.0
#: The AUTH mechanisms mailcli speaks (the send path's, see SmtpConnection).
MECHANISMS = ("PLAIN", "LOGIN")


def check_smtp(smtp: Any, *, environ: Mapping[str, str] | None = None) -> list[Check]:
    """Connect, secure, inspect, authenticate and count connections; never send mail.

    ``smtp`` has ``host``, ``port``, ``security`` ("starttls" | "tls" | "none"),
    ``username``, ``password_env``, ``timeout`` and ``ca_file``, and may have
    ``concurrency`` and ``helo_name`` (config.SmtpSettings).
    """
    env = os.environ if environ is None else environ
    try:
        context = tls_context(smtp.ca_file) if smtp.security in ("tls", "starttls") else None
    except (OSError, ssl.SSLError) as exc:
        return [Check("smtp-tls", "fail", f"[smtp] ca_file {smtp.ca_file}: {exc}", "Point ca_file at a PEM CA bundle", {})]
    return asyncio.run(_check(smtp, env, context))


def _params(smtp: Any, password: str | None) -> ConnectParams:
    return ConnectParams(
        host=smtp.host, port=int(smtp.port), security=smtp.security,
        # Without its password a login is not tried (the check says why).
        username=smtp.username if password else None, password=password,
        timeout=min(float(smtp.timeout or MAX_TIMEOUT), MAX_TIMEOUT),
        ca_file=str(smtp.ca_file) if smtp.ca_file else None,
        local_hostname=getattr(smtp, "helo_name", None) or default_local_hostname(),
    )


# Complexity: the SMTP steps in protocol order, each failure its own verdict and fix.
async def _check(smtp: Any, env: Mapping[str, str], context: ssl.SSLContext | None) -> list[Check]:
    password = env.get(smtp.password_env or "", "") or None if smtp.username else None
    params = _params(smtp, password)
    where = params.where
    conn = SmtpConnection(params, context)
    checks: list[Check] = []
    try:
        try:
            await conn.connect()
        except SmtpFatal as exc:  # implicit TLS: the handshake is part of connecting
            return [_tls_failure(smtp, where, str(exc))]
        except SmtpConnectFailed as exc:
            return [Check("smtp", "fail", str(exc), "Check [smtp] host and port, and that this machine may reach the server",
                          {"host": smtp.host, "port": int(smtp.port)})]
        try:
            await conn.handshake()
        except SmtpFatal as exc:
            if exc.reply is not None:  # a permanent refusal at the greeting
                return [Check("smtp", "fail", str(exc), "Ask the relay's administrator to let this machine send",
                              {"host": smtp.host, "port": int(smtp.port)})]
            connected = Check("smtp", "pass", f"connected to {where} ({smtp.security})", None,
                              {"host": smtp.host, "port": int(smtp.port)})
            return [connected, _tls_failure(smtp, where, str(exc))]
        except SmtpConnectFailed as exc:
            return [Check("smtp", "fail", str(exc), "Try again later; if it stays so, ask the relay's administrator",
                          {"host": smtp.host, "port": int(smtp.port)})]
        checks.append(Check("smtp", "pass", f"connected to {where} ({smtp.security}), EHLO as {conn.ehlo_name}", None,
                            {"host": smtp.host, "port": int(smtp.port), "ehlo_name": conn.ehlo_name}))
        checks.append(_tls_check(conn, smtp, where))
        checks.append(_extensions_check(conn))
        auth = await _auth_check(conn, smtp, where, password)
        checks.append(auth)
        concurrency = int(getattr(smtp, "concurrency", 1) or 1)
        if concurrency > 1 and auth.ok:
            checks.append(await _connections_check(params, context, concurrency))
    finally:
        await conn.quit()
    return checks


def _tls_failure(smtp: Any, where: str, message: str) -> Check:
    if "not trusted" in message:
        reason = message.split("not trusted:", 1)[1].strip()
        return Check(
            "smtp-tls", "fail", f"{where}: TLS certificate not accepted: {reason}",
            f"Use the host name on the server's certificate as [smtp] host, or, for a private CA, "
            f'set [smtp] ca_file = "path/to/ca.pem" (certificates are always verified; host {smtp.host})',
            {"error": reason},
        )
    if "STARTTLS" in message and "does not offer" in message:
        return Check("smtp-tls", "fail", f"{where}: STARTTLS not offered",
                     'set security = "tls" and port = 465 (implicit TLS), or use a server that offers STARTTLS', {})
    fix = ('If the server speaks STARTTLS on this port, set security = "starttls" and port = 587'
           if smtp.security == "tls" else None)
    return Check("smtp-tls", "fail", message, fix, {})


def _tls_check(conn: SmtpConnection, smtp: Any, where: str) -> Check:
    info = conn.tls_info()
    if info is not None:
        version, cipher = info
        return Check("smtp-tls", "pass", f"{version} ({cipher}), certificate verified for {smtp.host}", None,
                     {"version": version, "cipher": cipher})
    if is_loopback(smtp.host):
        return Check("smtp-tls", "warn", f"{where}: no TLS (allowed to a loopback host only)", None, {})
    return Check("smtp-tls", "fail", f"{where}: mail would travel unencrypted",
                 'set security = "starttls" and port = 587, or security = "tls" and port = 465', {})


def _extensions_check(conn: SmtpConnection) -> Check:
    ext = conn.extensions
    size = ext.get("SIZE", "").strip()
    mechanisms = conn.auth_mechanisms
    details = {
        "size": int(size) if size.isdigit() else None,
        "smtputf8": "SMTPUTF8" in ext,
        "pipelining": "PIPELINING" in ext,
        "8bitmime": "8BITMIME" in ext,
        "auth": mechanisms,
    }
    parts = [f"SIZE {size or 'not announced'}"]
    parts += [f"{name.upper()} {'yes' if details[name] else 'no'}" for name in ("smtputf8", "pipelining")]
    parts.append("AUTH " + (" ".join(mechanisms) or "not offered"))
    summary = ", ".join(parts)
    if not details["smtputf8"]:
        summary += " (addresses with a non-ASCII local part cannot be sent)"
    return Check("smtp-extensions", "pass", summary, None, details)


# Complexity: one verdict per AUTH outcome: offered or not, over TLS or not, accepted or refused.
async def _auth_check(conn: SmtpConnection, smtp: Any, where: str, password: str | None) -> Check:
    username = smtp.username
    mechanisms = conn.auth_mechanisms
    if not username:
        return Check("smtp-auth", "pass", "no [smtp] username: not logging in", None, {"mechanisms": mechanisms})
    details: dict[str, Any] = {"username": username, "mechanisms": mechanisms}
    if not conn.encrypted and not is_loopback(smtp.host):
        return Check("smtp-auth", "fail", f"{where}: not sending the password over an unencrypted connection",
                     'set security = "starttls" or "tls"', details)
    if not password:
        return Check("smtp-auth", "fail", f"environment variable {smtp.password_env} is not set",
                     f"export {smtp.password_env}=... (the SMTP password for {username})", details)
    if not mechanisms:
        return Check("smtp-auth", "fail", f"{where} offers no AUTH", "Check [smtp] host, port and security", details)
    usable = [m for m in MECHANISMS if m in mechanisms]
    if not usable:
        return Check("smtp-auth", "fail", f"{where} offers only AUTH {' '.join(mechanisms)}",
                     "mailcli supports AUTH PLAIN and LOGIN", details)
    details["mechanism"] = usable[0]
    # One attempt with one mechanism: repeated failures lock accounts on some relays.
    try:
        await conn.authenticate()
    except AuthRefused as exc:
        reply = f": {exc.reply}" if exc.reply is not None else ""
        return Check("smtp-auth", "fail", f"{where} refused the login for {username}{reply}",
                     f"Check [smtp] username and the password in {smtp.password_env}", details)
    except (NoAuthMechanism, SmtpFatal, SmtpConnectFailed) as exc:
        return Check("smtp-auth", "fail", f"{where}: AUTH failed: {exc}", None, details)
    return Check("smtp-auth", "pass", f"AUTH {usable[0]} accepted for {username}", None, details)


async def _connections_check(params: ConnectParams, context: ssl.SSLContext | None, concurrency: int) -> Check:
    """Open ``concurrency - 1`` more connections next to the first, all at once,
    and count how many the relay accepted (each sets up fully, AUTH included)."""
    extra = [SmtpConnection(params, context) for _ in range(concurrency - 1)]
    outcomes = await asyncio.gather(*(c.open() for c in extra), return_exceptions=True)
    try:
        refusals = [o for o in outcomes if isinstance(o, BaseException)]
        accepted = concurrency - len(refusals)
        details: dict[str, Any] = {"tried": concurrency, "accepted": accepted}
        if not refusals:
            return Check("smtp-connections", "pass",
                         f"accepted {accepted} connections at once ([smtp] concurrency = {concurrency})", None, details)
        first = refusals[0]
        reply = getattr(first, "reply", None)
        details["refusal"] = str(reply) if reply is not None else str(first)
        return Check(
            "smtp-connections", "warn",
            f"accepted {accepted} of {concurrency} connections at once; the next got: {details['refusal']}",
            f"set [smtp] concurrency = {max(1, accepted)} (send adapts to the relay's limit anyway, and remembers it)",
            details,
        )
    finally:
        await asyncio.gather(*(c.quit() for c in extra), return_exceptions=True)
