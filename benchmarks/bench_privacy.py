"""Benchmark: purge, erase and export on a database of many contacts.

Seeds N contacts (default 100 000; ``--quick``: 20 000) with memberships,
deliveries and events, a tenth of them past a retention period, then times
``purge --dry-run``, ``purge``, one ``erase`` and one ``export`` through the
core functions. The ceiling is a bare ``VACUUM`` of the same database in the
same run: purge does one VACUUM plus its queries, so purge/VACUUM shows the
overhead of the policy itself; erase normally needs no VACUUM at all, so
erase/VACUUM shows what secure_delete + checkpoint save.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from mailcli import clock
from mailcli.config import load_settings
from mailcli.privacy.erase import erase_subject
from mailcli.privacy.export import export_subject
from mailcli.privacy.retention import purge
from mailcli.project import init_project
from mailcli.store import backups, open_store
from mailcli.tokens import new_uid


def seed(store, n: int) -> None:
    now = clock.now()
    old = clock.to_iso(now.replace(year=now.year - 1))
    fresh = clock.to_iso(now)
    c = store.conn
    with store.transaction():
        c.execute("INSERT INTO lists (name, created_at) VALUES ('news', ?)", (fresh,))
        c.execute("INSERT INTO campaigns (uid, name, template, list_id, list_name, created_at)"
                  " VALUES (?, 'c1', 'newsletter', 1, 'news', ?)", (new_uid(), old))
        for i in range(n):
            gone = i % 10 == 0
            at = old if gone else fresh
            email = f"person{i}@example.net"
            cur = c.execute(
                "INSERT INTO contacts (uid, email, email_key, first_name, last_name, attributes, status, created_at,"
                " updated_at, last_activity_at) VALUES (?, ?, ?, 'First', 'Last', ?, ?, ?, ?, ?)",
                (new_uid(), email, email, json.dumps({"city": "Amsterdam"}), "unsubscribed" if gone else "active",
                 at, at, at),
            )
            cid = cur.lastrowid
            c.execute("INSERT INTO memberships (contact_id, list_id, status, consent_at, unsubscribed_at, created_at,"
                      " updated_at, basis) VALUES (?, 1, ?, ?, ?, ?, ?, 'consent')",
                      (cid, "unsubscribed" if gone else "subscribed", at, at if gone else None, at, at))
            c.execute("INSERT INTO deliveries (campaign_id, contact_id, status, message_id, created_at, updated_at)"
                      " VALUES (1, ?, 'sent', ?, ?, ?)", (cid, f"<{cid}@example.org>", old, old))
    backups.checkpoint(store.conn)


def timed(label: str, fn) -> float:
    start = time.perf_counter()
    fn()
    took = time.perf_counter() - start
    print(f"  {label:<22} {took:8.3f} s", flush=True)
    return took


def main() -> int:
    n = 20_000 if "--quick" in sys.argv else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        result = init_project(Path(tmp) / "proj")
        settings = load_settings(result.config)
        store = open_store(settings.project.database)
        print(f"seeding {n} contacts ...", flush=True)
        seed(store, n)
        size = settings.project.database.stat().st_size
        print(f"  database {size / 1e6:.1f} MB")
        vacuum = timed("VACUUM (ceiling)", lambda: store.conn.execute("VACUUM"))
        timed("purge --dry-run", lambda: purge(store, settings, dry_run=True))
        erase = timed("erase one person", lambda: erase_subject(store, settings, "person5@example.net"))
        timed("export one person", lambda: export_subject(store, settings, "person7@example.net",
                                                          output=Path(tmp) / "x.zip"))
        took = timed("purge", lambda: purge(store, settings))
        print(f"  purge / VACUUM   = {took / vacuum:.2f}")
        print(f"  erase / VACUUM   = {erase / vacuum:.2f}")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
