"""mailcli: email campaigns from the command line, GDPR-first.

The commands are thin wrappers around the functions exported here, which
work without a terminal: they take the open store and the settings, return
results, and raise ``MailcliError`` subclasses (each with the exit code the
command line ends with). See the README, "Python API".

A name is imported on first use, so ``import mailcli`` (and every command
line run) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Exported name -> the module that defines it.
_EXPORTS = {
    "MailcliError": "mailcli.errors",
    "ExitCode": "mailcli.errors",
    "init_project": "mailcli.project",
    "load_settings": "mailcli.config",
    "open_store": "mailcli.store",
    "import_contacts": "mailcli.contacts",
    "list_contacts": "mailcli.contacts",
    "show_contact": "mailcli.contacts",
    "update_contact": "mailcli.contacts",
    "compile_template": "mailcli.render",
    "preview_message": "mailcli.send.preview",
    "SendOptions": "mailcli.send.engine",
    "send_campaign": "mailcli.send.engine",
    "campaign_report": "mailcli.send.report",
    "campaign_overview": "mailcli.send.campaigns",
    "send_test": "mailcli.send.testsend",
    "parse_segment": "mailcli.segments",
    "unsubscribe_address": "mailcli.feedback.actions",
    "export_subject": "mailcli.privacy.export",
    "erase_subject": "mailcli.privacy.erase",
    "restrict_subject": "mailcli.privacy.restrict",
    "unrestrict_subject": "mailcli.privacy.restrict",
    "object_subject": "mailcli.privacy.restrict",
    "purge": "mailcli.privacy.retention",
    "create_backup": "mailcli.privacy.backup",
    "restore_backup": "mailcli.privacy.restore",
    "restore_from_replica": "mailcli.replication",
    "run_doctor": "mailcli.deliverability.doctor",
}

__all__ = [
    "ExitCode",
    "MailcliError",
    "SendOptions",
    "__version__",
    "campaign_overview",
    "campaign_report",
    "compile_template",
    "create_backup",
    "erase_subject",
    "export_subject",
    "import_contacts",
    "init_project",
    "list_contacts",
    "load_settings",
    "object_subject",
    "open_store",
    "parse_segment",
    "preview_message",
    "purge",
    "restore_backup",
    "restore_from_replica",
    "restrict_subject",
    "run_doctor",
    "send_campaign",
    "send_test",
    "show_contact",
    "unrestrict_subject",
    "unsubscribe_address",
    "update_contact",
]

if TYPE_CHECKING:
    from .config import load_settings
    from .contacts import import_contacts, list_contacts, show_contact, update_contact
    from .deliverability.doctor import run_doctor
    from .errors import ExitCode, MailcliError
    from .feedback.actions import unsubscribe_address
    from .privacy.backup import create_backup
    from .privacy.erase import erase_subject
    from .privacy.export import export_subject
    from .privacy.restore import restore_backup
    from .privacy.restrict import object_subject, restrict_subject, unrestrict_subject
    from .privacy.retention import purge
    from .project import init_project
    from .render import compile_template
    from .replication import restore_from_replica
    from .segments import parse_segment
    from .send.campaigns import campaign_overview
    from .send.engine import SendOptions, send_campaign
    from .send.preview import preview_message
    from .send.report import campaign_report
    from .send.testsend import send_test
    from .store import open_store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mailcli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
