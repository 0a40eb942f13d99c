"""mailcli: email campaigns from the command line, GDPR-first."""

__version__ = "0.1.0"
