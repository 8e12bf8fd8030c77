"""The registry token signing key: created once in the data directory, with its certificate."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

TOKEN_TTL = 300


@dataclass(frozen=True)
class SigningKey:
    """The token signing key, its certificate (PEM) and its libtrust key id."""

    private_key: rsa.RSAPrivateKey
    certificate_pem: bytes
    kid: str


def libtrust_kid(public_key: Any) -> str:
    """Return the libtrust key id: SHA-256 of the DER SubjectPublicKeyInfo, 30 bytes, base32."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, 48, 4))


def load_or_create_key(key_file: Path, cert_file: Path, now: datetime) -> SigningKey:
    """Load the signing key and certificate, creating both on first start."""
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{key_file} does not hold an RSA private key")
    cert = None
    if cert_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        public = cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey) or (
                public.public_numbers() != loaded.public_key().public_numbers()):
            cert = None  # belongs to another key: make a new one
    if cert is None:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forge registry token signer")])
        start = now.replace(tzinfo=UTC) - timedelta(days=1)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(loaded.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + timedelta(days=3650))
                .sign(loaded, hashes.SHA256()))
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return SigningKey(loaded, cert.public_bytes(serialization.Encoding.PEM),
                      libtrust_kid(loaded.public_key()))


def issue_token(key: SigningKey, *, issuer: str, service: str, subject: str | None,
                access: list[dict[str, Any]], auth_type: str, now: datetime) -> str:
    """Sign a registry token with the claims GitLab puts in it."""
    iat = int(now.replace(tzinfo=UTC).timestamp())
    claims = {"iss": issuer, "aud": service, "sub": subject or "", "iat": iat, "nbf": iat - 5,
              "exp": iat + TOKEN_TTL, "jti": str(uuid.uuid4()), "auth_type": auth_type,
              "access": access}
    return jwt.encode(claims, key.private_key, algorithm="RS256",
                      headers={"kid": key.kid, "typ": "JWT"})
