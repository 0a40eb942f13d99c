"""What comes back after a send: opt-outs, bounces and complaints.

* ``actions`` — the one place that records an unsubscribe, bounce or
  complaint (memberships, suppression list, events, audit), whatever the channel;
* ``web`` — the RFC 8058 one-click endpoint behind ``mailcli serve``;
* ``reports`` — reading DSN (RFC 3464), ARF (RFC 5965) and mailto requests;
* ``sources`` — mbox, Maildir and IMAP mailboxes;
* ``ingest`` — applying a mailbox once, for ``mailcli bounces``.
"""
