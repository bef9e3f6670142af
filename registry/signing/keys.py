"""Keys: EC private keys (P-256/384/521, PEM) to sign with, public keys to name and trust.

A key's *fingerprint* is ``sha256:`` + the hex sha256 of its public key in PEM
SubjectPublicKeyInfo form: the same value model-signing writes into a bundle as the public
key's ``hint``, so a bundle names the key that made it. Private keys are read from the file the
user names and never stored; a passphrase comes only from the environment.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import InvalidInput, KeyFileError

PASSPHRASE_ENV = "REGISTRY_SIGN_PASSPHRASE"
CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing accepts


@dataclass(frozen=True)
class PrivateKey:
    """A private key read from ``path`` (kept as a path: model-signing's signer reads it again)."""

    path: Path
    passphrase: bytes | None
    public_pem: str
    fingerprint: str


def public_pem(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def fingerprint_of(pem: str) -> str:
    """``sha256:HEX`` of a PEM public key (as canonical PEM)."""
    return "sha256:" + hashlib.sha256(pem.encode()).hexdigest()


def load_public(path: str | Path) -> str:
    """The canonical PEM of the EC public key in ``path``; KeyFileError saying what is wrong."""
    data = _read(Path(path))
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        if b"PRIVATE KEY" in data:
            raise KeyFileError(f"{path} is a private key: give the public key (e.g. `openssl ec -in KEY "
                               "-pubout`); a private key never goes into the registry") from None
        raise KeyFileError(f"{path} is not a PEM public key") from None
    return public_pem(_ec(key, path))


def load_private(path: str | Path, environ: Mapping[str, str] | None = None) -> PrivateKey:
    """The EC private key in ``path``, decrypted with $REGISTRY_SIGN_PASSPHRASE when it is
    encrypted; KeyFileError saying what to do otherwise."""
    environ = os.environ if environ is None else environ
    path = Path(path)
    data = _read(path)
    secret = environ.get(PASSPHRASE_ENV)
    passphrase = secret.encode() if secret else None
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError:  # encrypted without a passphrase, or a passphrase for a plain key
        if passphrase is None:
            raise KeyFileError(f"{path} is encrypted: export its passphrase as ${PASSPHRASE_ENV}") from None
        key = serialization.load_pem_private_key(data, None)
        passphrase = None
    except ValueError:
        if passphrase is not None and b"ENCRYPTED" in data:
            raise KeyFileError(f"{path}: the passphrase in ${PASSPHRASE_ENV} does not open it") from None
        raise KeyFileError(f"{path} is not a PEM private key") from None
    pem = public_pem(_ec(key.public_key(), path))
    return PrivateKey(path=path, passphrase=passphrase, public_pem=pem, fingerprint=fingerprint_of(pem))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror or exc}") from None


def _ec(key, path) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in CURVES:
        raise InvalidInput(f"{path}: only EC keys on P-256, P-384 or P-521 can sign model-signing bundles "
                           "(make one with `openssl ecparam -name prime256v1 -genkey -noout -out KEY`)")
    return key
