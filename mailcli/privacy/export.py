"""Everything held about one person, as a ZIP (GDPR art. 15 and 20; ``docs/guarantees.md#access``).

The archive holds:

* ``subject.json`` — one schema-versioned document (``mailcli.subject-export/1``)
  with the profile (fields the person gave us marked ``provided_by_subject``
  for portability), memberships with consent evidence, deliveries, events,
  suppression entries, audit entries about the person, their requests, the
  files mailcli wrote about them, and the art. 15(1) information;
* one CSV per kind of record (RFC 4180 quoting; cells that a spreadsheet
  would run as a formula are neutralised with a leading ``'``);
* ``letter.txt`` — the art. 15(1) letter (``letter.py``);
* ``manifest.sha256`` — ``sha256sum -c`` format for every other file.

The written file is registered (:mod:`mailcli.privacy.files`), so an erasure
deletes it and ``[retention] exports`` expires it, and the person's open
access and portability requests are closed.

Data is gathered by walking the registry (``registry.PERSONAL_DATA_TABLES``)
with the person's contact id or address HMAC, never by name or domain, so a
second person with the same name, domain or list can never end up in the
file. The ZIP is written 0600 to a temporary file and renamed into
place, so a half-written export never exists under the final name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import audit, clock
from ..cells import neutralise
from ..config import Settings
from ..errors import MailcliError
from ..ownfiles import output_target
from ..store import Store, personal_data
from ..store import audit as audit_rows
from ..store.clicks import contact_clicks
from ..store.events import events_of
from ..store.requests import close_open_requests, requests_of
from ..store.suppressions import suppressions_of
from ..store.written import files_about
from .files import register_written
from .letter import LetterFacts, information, render_letter
from .registry import PERSONAL_DATA_TABLES, uncovered_tables
from .subject import Subject, find_subject, require_contact

if TYPE_CHECKING:
    from ..store.db import Connection

SCHEMA = "mailcli.subject-export/1"

# Profile fields the person gave us (art. 20 covers data "provided by" them).
PROVIDED_BY_SUBJECT = ("email", "first_name", "last_name", "attributes")
RECORDED_BY_US = ("uid", "status", "restricted_at", "no_marketing_at", "source",
                  "created_at", "updated_at", "last_activity_at")


def cell(value: Any) -> str:
    """A value as a CSV cell a spreadsheet will show as text, never run as a formula."""
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False) \
        if isinstance(value, (dict, list)) else str(value)
    return neutralise(text)


def to_csv(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(column)) for column in columns])
    return buffer.getvalue().encode("utf-8")


# -- gathering, one builder per registered table ---------------------------------

def _contact_id(subject: Subject) -> int:
    assert subject.contact_id is not None  # export_subject requires a contact
    return subject.contact_id


def _profile(conn: Connection, subject: Subject) -> dict[str, Any]:
    row = personal_data.profile(conn, _contact_id(subject))
    provided = {key: row.get(key) for key in PROVIDED_BY_SUBJECT}
    recorded = {key: row.get(key) for key in RECORDED_BY_US if key in row}
    extra = {k: v for k, v in row.items() if k not in provided and k not in recorded and k not in ("id", "email_key")}
    return {"provided_by_subject": provided, "recorded": {**recorded, **extra}}


def _memberships(conn: Connection, subject: Subject) -> list[dict[str, Any]]:
    from ..store.signups import consent_wording

    rows = personal_data.memberships(conn, _contact_id(subject))
    out = []
    for row in rows:
        out.append({
            "list": row["list"], "status": row["status"], "basis": row.get("basis"),
            "consent": {key.removeprefix("consent_"): row.get(key) for key in row if key.startswith("consent_")}
            | {"wording": consent_wording(conn, row.get("consent_text")), "confirmed_at": row.get("confirmed_at")},
            "unsubscribed_at": row.get("unsubscribed_at"), "unsubscribe_channel": row.get("unsubscribe_channel"),
            "created_at": row.get("created_at"), "updated_at": row.get("updated_at"),
        })
    return out


def _deliveries(conn: Connection, subject: Subject) -> list[dict[str, Any]]:
    return personal_data.deliveries(conn, _contact_id(subject))


def _events(conn: Connection, subject: Subject) -> list[dict[str, Any]]:
    return events_of(conn, _contact_id(subject))


def _suppression(conn: Connection, subject: Subject) -> list[dict[str, Any]]:
    return suppressions_of(conn, subject.hmac)


def _clicks(conn: Connection, subject: Subject) -> list[dict[str, Any]]:
    return contact_clicks(conn, _contact_id(subject))


def _audit(conn: Connection, subject: Subject) -> list[dict[str, Any]]:
    rows = audit_rows.entries(conn, subject_hmac=subject.hmac)
    for row in rows:
        del row["subject_hmac"]
    return rows


def _requests(conn: Connection, subject: Subject) -> list[dict[str, Any]]:
    return requests_of(conn, subject.hmac)


def _files(conn: Connection, subject: Subject) -> list[dict[str, Any]]:
    return [{"kind": f.kind, "path": f.path, "created_at": f.created_at} for f in files_about(conn, subject.hmac)]


# registered table -> (section name in subject.json, builder)
def _signups(conn: Connection, subject: Subject) -> list[dict[str, Any]]:
    from ..store.signups import signups_of

    return signups_of(conn, _contact_id(subject))


SECTIONS: dict[str, tuple[str, Callable[[Connection, Subject], Any]]] = {
    "signups": ("signups", _signups),
    "contacts": ("profile", _profile),
    "memberships": ("memberships", _memberships),
    "deliveries": ("deliveries", _deliveries),
    "events": ("events", _events),
    "clicks": ("clicks", _clicks),
    "suppressions": ("suppression", _suppression),
    "audit_log": ("audit", _audit),
    "requests": ("requests", _requests),
    "written_files": ("files", _files),
}


def gather(conn: Connection, subject: Subject) -> dict[str, Any]:
    """Every registered table's rows about ``subject``, keyed by section."""
    sections: dict[str, Any] = {}
    for table, entry in PERSONAL_DATA_TABLES.items():
        if table in SECTIONS:
            name, build = SECTIONS[table]
            sections[name] = build(conn, subject)
        else:  # a table registered without a builder: export its rows as they are
            value = subject.hmac if entry.by_hmac else subject.contact_id
            sections[table] = personal_data.rows_about(conn, table, entry.key, value)
    return sections


# -- the archive -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path
    ref: str
    counts: dict[str, int]
    files: tuple[str, ...]
    warnings: tuple[str, ...]
    requests_closed: list[int] = field(default_factory=list)


def default_export_path(settings: Settings, subject: Subject) -> Path:
    """``exports/<hmac prefix>-<date>.zip``: the file name never holds the address."""
    return settings.root / "exports" / f"{subject.ref}-{clock.now().strftime('%Y%m%d')}.zip"


def _csv_files(data: dict[str, Any]) -> dict[str, bytes]:
    profile = data["profile"]
    profile_rows: list[dict[str, Any]] = []
    for part, provided in (("provided_by_subject", "yes"), ("recorded", "no")):
        for key, value in profile[part].items():
            if key == "attributes" and isinstance(value, dict):
                profile_rows += [{"field": f"attributes.{k}", "value": v, "provided_by_subject": provided}
                                 for k, v in value.items()]
            else:
                profile_rows.append({"field": key, "value": value, "provided_by_subject": provided})
    memberships = [
        {"list": m["list"], "status": m["status"], "basis": m["basis"], **{f"consent_{k}": v for k, v in m["consent"].items()},
         "unsubscribed_at": m["unsubscribed_at"], "unsubscribe_channel": m["unsubscribe_channel"],
         "created_at": m["created_at"], "updated_at": m["updated_at"]}
        for m in data["memberships"]
    ]
    files = {"profile.csv": to_csv(["field", "value", "provided_by_subject"], profile_rows)}
    for name, rows in (("memberships.csv", memberships), ("deliveries.csv", data["deliveries"]),
                       ("events.csv", data["events"]), ("clicks.csv", data["clicks"]),
                       ("suppression.csv", data["suppression"]),
                       ("audit.csv", data["audit"]), ("requests.csv", data["requests"]),
                       ("signups.csv", data["signups"])):
        columns = list(rows[0]) if rows else _EMPTY_COLUMNS[name]
        files[name] = to_csv(columns, rows)
    return files


_EMPTY_COLUMNS = {
    "signups.csv": ["list", "form", "language", "created_at", "ip", "confirmed_at", "confirmed_ip", "mail_status",
                    "consent_wording"],
    "memberships.csv": ["list", "status", "basis", "consent_source", "consent_method", "consent_at", "consent_ip",
                        "consent_text", "consent_wording", "consent_confirmed_at", "unsubscribed_at", "unsubscribe_channel",
                        "created_at", "updated_at"],
    "deliveries.csv": ["campaign", "campaign_subject", "status", "message_id", "attempts", "last_reply",
                       "created_at", "updated_at", "sent_at"],
    "events.csv": ["created_at", "kind", "channel", "scope", "campaign", "detail", "source_ref"],
    "suppression.csv": ["scope", "reason", "channel", "created_at"],
    "clicks.csv": ["campaign", "url", "clicked_at", "ip_network"],
    "audit.csv": ["id", "at", "actor", "command", "action", "detail", "reason"],
    "requests.csv": ["id", "kind", "received_at", "due_at", "extended_months", "extension_reason", "closed_at",
                     "closed_by"],
}


def _write_zip(path: Path, files: dict[str, bytes], moment: tuple[int, int, int, int, int, int], *,
               make_folder: bool) -> None:
    try:
        if make_folder:  # the project's exports/; a folder named with -o must exist (``output_target``)
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        reason = f"{path.parent} is not a folder" if isinstance(exc, (FileExistsError, NotADirectoryError)) \
            else exc.strerror
        raise MailcliError(f"Cannot write the export {path}: {reason}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for name, content in files.items():
                    info = zipfile.ZipInfo(name, date_time=moment)
                    info.external_attr = (0o100600 << 16)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        os.chmod(path, 0o600)
    except OSError as exc:
        with_suppressed_unlink(tmp)
        raise MailcliError(f"Cannot write the export {path}: {exc.strerror}") from None
    except BaseException:
        with_suppressed_unlink(tmp)
        raise


def with_suppressed_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# Complexity: the steps of an export in order: registry check, one gathering transaction, the files, the audit and the warnings.
def export_subject(store: Store, settings: Settings, email: str, *, output: Path | None = None,
                   reason: str | None = None) -> ExportResult:
    """Write the ZIP for one person; unknown person: NotFoundError (exit 1);
    ``output`` in a folder that does not exist: UsageError (exit 2)."""
    if output is not None:
        output = output_target(settings, Path(output), "-o", like="export.zip", home=settings.root / "exports")
    subject = find_subject(store, settings, email)
    require_contact(subject)
    warnings = tuple(
        f"table {name} holds personal data but is not in the privacy registry; its rows are not exported"
        for name in uncovered_tables(store.conn)
    )
    path = Path(output) if output else default_export_path(settings, subject)
    now = clock.now()
    generated_at = clock.to_iso(now)
    with store.transaction() as conn:
        # Logged first, so the export shows its own access too.
        # The default name holds only the reference; a name chosen with -o may
        # hold the person's name, and the audit log outlives their erasure.
        audit.record_access(store, settings, "export", subject_hmac=subject.hmac, command="privacy export",
                            detail={"file": path.name if not output else "chosen with -o"}, reason=reason)
        sections = gather(conn, subject)
    counts = {name: len(value) for name, value in sections.items() if isinstance(value, list)}
    profile = sections["profile"]
    facts = LetterFacts(
        generated_at=generated_at,
        lists=[m["list"] for m in sections["memberships"] if m["status"] != "unsubscribed"],
        attribute_names=sorted(profile["provided_by_subject"].get("attributes") or {}),
        sources=sorted({s for s in [*(m["consent"].get("source") for m in sections["memberships"]),
                                    profile["recorded"].get("source")] if s}),
        counts=counts,
    )
    document = {
        "schema": SCHEMA,
        "generated_at": generated_at,
        "controller": {"name": settings.project.name, "sender": settings.sender.from_header,
                       "reply_to": settings.sender.reply_to, "postal_address": settings.sender.postal_address},
        "subject": {"reference": subject.ref},
        **sections,
        "information": information(settings, facts),
    }
    files = {"subject.json": (json.dumps(document, ensure_ascii=False, indent=2, sort_keys=False) + "\n").encode("utf-8")}
    files.update(_csv_files(sections))
    files["letter.txt"] = render_letter(settings, facts).encode("utf-8")
    files["manifest.sha256"] = "".join(
        f"{hashlib.sha256(content).hexdigest()}  {name}\n" for name, content in files.items()
    ).encode("ascii")
    home = Path(os.path.realpath(settings.root / "exports"))
    _write_zip(path, files, now.timetuple()[:6], make_folder=Path(os.path.realpath(path)).parent == home)
    register_written(store, settings, path, "export", subject.hmac)
    with store.transaction() as conn:
        closed = close_open_requests(conn, subject.hmac, ("access", "portability"), "privacy export", generated_at)
    return ExportResult(path=path, ref=subject.ref, counts=counts, files=tuple(files), warnings=warnings,
                        requests_closed=closed)
