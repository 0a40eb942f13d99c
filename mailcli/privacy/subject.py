"""Finding one data subject by address.

A request names a person by address. The address is normalised exactly as an
import does (``addresses.normalise_address``) and looked up by its comparison
key; the keyed HMAC of that key is how the suppression list and the audit log
name the same person without holding the address.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..addresses import mask_address, normalise_address
from ..config import Settings
from ..errors import NotFoundError
from ..store import Store
from ..store.subjects import contact_id_by_email_key
from ..tokens import address_hmac


@dataclass(frozen=True, slots=True)
class Subject:
    """A person named in a request; ``contact_id`` is None when we hold no contact."""

    address: str
    key: str
    hmac: str
    contact_id: int | None

    @property
    def masked(self) -> str:
        return mask_address(self.address)

    @property
    def ref(self) -> str:
        """A short, non-identifying reference for file names and messages."""
        return self.hmac[:12]


def find_subject(store: Store, settings: Settings, email: str) -> Subject:
    """The subject for ``email`` (invalid address: UsageError; absent: contact_id None)."""
    normalised = normalise_address(email)
    return Subject(
        address=normalised.address,
        key=normalised.key,
        hmac=address_hmac(settings.secret(), normalised.key),
        contact_id=contact_id_by_email_key(store.conn, normalised.key),
    )


def require_contact(subject: Subject) -> int:
    if subject.contact_id is None:
        raise NotFoundError(
            f"No contact with the address {subject.masked}",
            hint="check the spelling; `mailcli contacts --json` lists who is held",
        )
    return subject.contact_id
