"""Masking personal data in logs and progress output (STANDARDS E26).

Status lines, logs and CI output name people only as ``a***@example.nl``;
full addresses appear only where the user asked for data about a person
(``contacts show``, ``privacy export``) or typed the address themselves.
"""

from __future__ import annotations


def mask_address(address: str) -> str:
    """``anna.devries@example.nl`` → ``a***@example.nl``."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address[:1] + "***" if address else ""
    return f"{local[:1]}***@{domain}"


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret value in ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
