"""``doctor --smtp``: can mailcli reach, encrypt to and log in to the relay?

Connects to ``[smtp] host:port``, says EHLO, upgrades with STARTTLS (or starts
with implicit TLS), verifies the certificate and host name with
``ssl.create_default_context()`` (plus ``ca_file``) at TLS 1.2 or newer, says
EHLO again (pre-TLS capabilities are discarded), reports SIZE, SMTPUTF8,
PIPELINING and the AUTH mechanisms, and tries AUTH when a username is set.
It sends no mail (STANDARDS D20, F21–F25).

The password is read from the environment variable ``password_env`` names and
is never printed; smtplib's debug output stays off because it would echo the
base64 AUTH credentials (F19). AUTH is never attempted without TLS except to
a loopback host (F23).
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
from collections.abc import Mapping
from typing import Any

from mailcli.deliverability.check import Check
from mailcli.net import is_loopback, tls_context

#: Cap the wait for a dead relay: doctor runs in CI and cron.
MAX_TIMEOUT = 15.0


def _cert_failure(name: str, where: str, exc: ssl.SSLError, host: str) -> Check:
    reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
    return Check(
        name,
        "fail",
        f"{where}: TLS certificate not accepted: {reason}",
        f"Use the host name on the server's certificate as [smtp] host, or, for a private CA, "
        f'set [smtp] ca_file = "path/to/ca.pem" (certificates are always verified; host {host})',
        {"error": str(reason)},
    )


def check_smtp(smtp: Any, *, environ: Mapping[str, str] | None = None) -> list[Check]:
    """Connect, secure, inspect and (optionally) authenticate; never send mail.

    ``smtp`` has ``host``, ``port``, ``security`` ("starttls" | "tls" | "none"),
    ``username``, ``password_env``, ``timeout`` and ``ca_file`` (config.SmtpSettings).
    """
    env = os.environ if environ is None else environ
    host, port, security = smtp.host, int(smtp.port), smtp.security
    where = f"{host}:{port}"
    timeout = min(float(smtp.timeout or MAX_TIMEOUT), MAX_TIMEOUT)
    checks: list[Check] = []
    try:
        context = tls_context(smtp.ca_file)
    except (OSError, ssl.SSLError) as exc:
        return [
            Check(
                "smtp-tls",
                "fail",
                f"[smtp] ca_file {smtp.ca_file}: {exc}",
                "Point ca_file at a PEM CA bundle",
                {},
            )
        ]
    local_name = socket.gethostname() or "localhost"  # no DNS lookup, unlike getfqdn()
    client: smtplib.SMTP | None = None
    try:
        try:
            if security == "tls":
                client = smtplib.SMTP_SSL(
                    host, port, local_hostname=local_name, timeout=timeout, context=context
                )
            else:
                client = smtplib.SMTP(host, port, local_hostname=local_name, timeout=timeout)
        except ssl.SSLCertVerificationError as exc:
            return [_cert_failure("smtp-tls", where, exc, host)]
        except ssl.SSLError as exc:
            return [
                Check(
                    "smtp-tls",
                    "fail",
                    f"{where}: TLS handshake failed: {exc.reason or exc}",
                    'If the server speaks STARTTLS on this port, set security = "starttls" and port = 587',
                    {},
                )
            ]
        except (OSError, smtplib.SMTPException) as exc:
            return [
                Check(
                    "smtp",
                    "fail",
                    f"cannot connect to {where}: {exc}",
                    "Check [smtp] host and port, and that this machine may reach the server",
                    {"host": host, "port": port},
                )
            ]
        checks.append(
            Check(
                "smtp",
                "pass",
                f"connected to {where} ({security})",
                None,
                {"host": host, "port": port},
            )
        )
        checks.extend(_secure_and_inspect(client, smtp, where, context, env))
    finally:
        if client is not None:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()
    return checks


def _secure_and_inspect(
    client: smtplib.SMTP,
    smtp: Any,
    where: str,
    context: ssl.SSLContext,
    env: Mapping[str, str],
) -> list[Check]:
    host, security = smtp.host, smtp.security
    checks: list[Check] = []
    client.ehlo()
    if security == "starttls":
        if not client.has_extn("starttls"):
            return [
                Check(
                    "smtp-tls",
                    "fail",
                    f"{where}: STARTTLS not offered",
                    'set security = "tls" and port = 465 (implicit TLS), or use a server that offers STARTTLS',
                    {},
                )
            ]
        try:
            client.starttls(context=context)
        except ssl.SSLCertVerificationError as exc:
            return [_cert_failure("smtp-tls", where, exc, host)]
        except (ssl.SSLError, smtplib.SMTPException, OSError) as exc:
            return [Check("smtp-tls", "fail", f"{where}: STARTTLS failed: {exc}", None, {})]
        client.ehlo()  # capabilities from before TLS are not trusted (RFC 3207 §4.2)
    encrypted = isinstance(client.sock, ssl.SSLSocket)
    if encrypted:
        sock: ssl.SSLSocket = client.sock  # type: ignore[assignment]
        version, cipher = sock.version(), (sock.cipher() or ("?",))[0]
        checks.append(
            Check(
                "smtp-tls",
                "pass",
                f"{version} ({cipher}), certificate verified for {host}",
                None,
                {"version": version, "cipher": cipher},
            )
        )
    elif is_loopback(host):
        checks.append(
            Check(
                "smtp-tls", "warn", f"{where}: no TLS (allowed to a loopback host only)", None, {}
            )
        )
    else:
        checks.append(
            Check(
                "smtp-tls",
                "fail",
                f"{where}: mail would travel unencrypted",
                'set security = "starttls" and port = 587, or security = "tls" and port = 465',
                {},
            )
        )
    features = client.esmtp_features
    size = features.get("size", "").strip()
    auth_mechanisms = features.get("auth", "").upper().split()
    ext = {
        "size": int(size) if size.isdigit() else None,
        "smtputf8": "smtputf8" in features,
        "pipelining": "pipelining" in features,
        "8bitmime": "8bitmime" in features,
        "auth": auth_mechanisms,
    }
    parts = [f"SIZE {size or 'not announced'}"]
    parts += [
        f"{name.upper()} {'yes' if ext[name] else 'no'}" for name in ("smtputf8", "pipelining")
    ]
    parts.append("AUTH " + (" ".join(auth_mechanisms) or "not offered"))
    checks.append(Check("smtp-extensions", "pass", ", ".join(parts), None, ext))
    checks.append(_check_auth(client, smtp, where, encrypted, auth_mechanisms, env))
    return checks


def _check_auth(
    client: smtplib.SMTP,
    smtp: Any,
    where: str,
    encrypted: bool,
    mechanisms: list[str],
    env: Mapping[str, str],
) -> Check:
    username = smtp.username
    if not username:
        return Check(
            "smtp-auth",
            "pass",
            "no [smtp] username: not logging in",
            None,
            {"mechanisms": mechanisms},
        )
    details = {"username": username, "mechanisms": mechanisms}
    if not encrypted and not is_loopback(smtp.host):
        return Check(
            "smtp-auth", "fail", f"{where}: not sending the password over an unencrypted connection",
            'set security = "starttls" or "tls"', details,
        )  # fmt: skip
    password = env.get(smtp.password_env or "", "")
    if not password:
        return Check(
            "smtp-auth",
            "fail",
            f"environment variable {smtp.password_env} is not set",
            f"export {smtp.password_env}=... (the SMTP password for {username})",
            details,
        )
    if not mechanisms:
        return Check(
            "smtp-auth",
            "fail",
            f"{where} offers no AUTH",
            "Check [smtp] host, port and security",
            details,
        )
    # One attempt with one mechanism: smtplib.login() would retry every offered
    # mechanism, and repeated failures can lock the account on some relays.
    usable = [m for m in ("PLAIN", "LOGIN", "CRAM-MD5") if m in mechanisms]
    if not usable:
        return Check(
            "smtp-auth", "fail", f"{where} offers only AUTH {' '.join(mechanisms)}",
            "mailcli supports AUTH PLAIN, LOGIN and CRAM-MD5", details,
        )  # fmt: skip
    mechanism = usable[0]
    details["mechanism"] = mechanism
    authobject: Any = {
        "PLAIN": client.auth_plain, "LOGIN": client.auth_login, "CRAM-MD5": client.auth_cram_md5,
    }[mechanism]  # fmt: skip
    client.user, client.password = username, password
    try:
        client.auth(mechanism, authobject)
    except smtplib.SMTPAuthenticationError as exc:
        reply = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return Check(
            "smtp-auth",
            "fail",
            f"{where} refused the login for {username}: {exc.smtp_code} {reply}",
            f"Check [smtp] username and the password in {smtp.password_env}",
            details,
        )
    except (smtplib.SMTPException, OSError) as exc:
        return Check("smtp-auth", "fail", f"{where}: AUTH failed: {exc}", None, details)
    finally:
        client.password = ""  # do not keep the secret on the connection object
    return Check("smtp-auth", "pass", f"AUTH {mechanism} accepted for {username}", None, details)
