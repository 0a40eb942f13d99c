"""Data-subject rights and retention: export, erase, restrict, object, purge, backups.

The core of GDPR articles 15-21 for mailcli, free of any terminal code:

* ``registry``  — the one list of tables that hold personal data, and how
  each is found for a person, exported and erased;
* ``subject``   — finding one person by address (normalised, keyed HMAC);
* ``export``    — everything held about one person as a ZIP (art. 15/20);
* ``erase``     — erasure without trace (art. 17) and the erasure ledger;
* ``restrict``  — restriction (art. 18) and objection (art. 21);
* ``retention`` — ``purge``: the ``[retention]`` policy, cron-safe;
* ``backup``    — consistent backups; ``restore`` puts one back, and
  ``reapply`` re-applies the erasures and opt-outs made since;
* ``scrub``     — making sure deleted data leaves the database files;
* ``auditlog``  — reading and verifying the hash-chained audit log.

Their SQL lives in :mod:`mailcli.store`: ``suppressions``, ``events``,
``audit``, ``subjects``, ``personal_data``, ``retention``, ``backups`` and
``schema``.
"""
