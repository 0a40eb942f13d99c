"""RSA keys for DKIM tests, made on the fly (never committed to the repository)."""

from __future__ import annotations

import base64
import functools

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@functools.cache
def private_pem(bits: int = 2048) -> bytes:
    """A fresh RSA private key in PKCS#1 PEM, cached per size for the session."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def public_b64(pem: bytes) -> str:
    """The DNS ``p=`` value for a private key."""
    key = serialization.load_pem_private_key(pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def weak_public_b64(bits: int) -> str:
    """A ``p=`` value with a modulus of ``bits`` bits.

    cryptography refuses to generate keys under 1024 bits, and the check only
    reads the length, so an odd number of the right size stands in for a key.
    """
    modulus = (1 << (bits - 1)) | 0xC0FFEE | 1
    public = rsa.RSAPublicNumbers(65537, modulus).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")
