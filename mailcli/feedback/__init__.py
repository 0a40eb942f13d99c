"""What comes back after a send: opt-outs, bounces and complaints.

* ``actions`` — the one place that records an unsubscribe, bounce or
  complaint (memberships, suppression list, events, audit), whatever the channel;
* ``web`` — the RFC 8058 one-click endpoint behind ``mailcli serve``, with
  ``forms`` (the POST body) and ``clients`` (who is asking, and how often);
* ``reports`` — reading DSN (RFC 3464), ARF (RFC 5965) and mailto requests;
  ``verdicts`` — what a status code means for the address;
* ``sources`` — mbox, Maildir and IMAP mailboxes, the IMAP one read by ``imap``;
* ``ingest`` — applying a mailbox once, for ``mailcli bounces``, with
  ``matching`` — which contact and campaign a report is about.

Their SQL lives in :mod:`mailcli.store`: ``suppressions``, ``events``,
``subjects``, ``lists``, ``attribution`` and ``processed``.
"""
