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
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import InvalidInput, KeyFileError

PASSPHRASE_ENV = "REGISTRY_SIGN_PASSPHRASE"
CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing accepts


PIN_ENV = "REGISTRY_PKCS11_PIN"
MODULE_ENV = "REGISTRY_PKCS11_MODULE"


@dataclass(frozen=True)
class PrivateKey:
    """A private key: a file at ``path`` (kept as a path: model-signing's signer reads it again),
    or a key on a PKCS#11 token, already opened as model-signing's ``token_signer``."""

    path: Path | None
    passphrase: bytes | None
    public_pem: str
    fingerprint: str
    shown: str  # how messages name it: the file, or the URI without any PIN
    token_signer: Any = None

    def close(self) -> None:
        """Log out of the token and close its session now: a PKCS#11 login belongs to the whole
        process, so one left to the garbage collector makes the next opening of a key on that
        token fail (CKR_USER_ALREADY_LOGGED_IN) in a process that signs twice."""
        session = getattr(self.token_signer, "session", None)
        if session is None:
            return
        for end in (session.logout, session.closeSession):
            try:
                end()
            except Exception:  # already logged out or closed: nothing more to end
                pass
        self.token_signer.session = None


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
    if str(path).startswith("pkcs11:"):
        return _on_token(str(path), environ)
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
    return PrivateKey(path=path, passphrase=passphrase, public_pem=pem, fingerprint=fingerprint_of(pem),
                      shown=str(path))


def _on_token(uri: str, environ: Mapping[str, str]) -> PrivateKey:
    """A key on a PKCS#11 token (``pkcs11:token=T;object=LABEL``), opened with model-signing's
    PKCS#11 signer. The PIN comes from $REGISTRY_PKCS11_PIN (or the URI's ``pin-source=file:``),
    never from the command line; the module from ``module-path=`` or $REGISTRY_PKCS11_MODULE."""
    if "pin-value=" in uri:
        raise InvalidInput(f"a PIN in the key URI would show in the process list and shell history: "
                           f"export it as ${PIN_ENV} instead")
    shown, query = uri, []
    if not environ.get(PIN_ENV) and "pin-source=" not in uri:
        # Said before the token is touched: a login another key of this process made may still
        # hold (PKCS#11 logins are per process), and signing must not depend on it.
        raise KeyFileError(f"cannot open the PKCS#11 key {shown}: no PIN given: export it as ${PIN_ENV}")
    if (pin := environ.get(PIN_ENV)) and "pin-source=" not in uri:
        query.append(f"pin-value={quote(pin, safe='')}")
    if (module := environ.get(MODULE_ENV)) and "module-path=" not in uri and "module-name=" not in uri:
        query.append(f"module-path={quote(module, safe='/')}")
    full = uri + ("&" if "?" in uri else "?") + "&".join(query) if query else uri
    try:
        from model_signing._signing import sign_pkcs11
    except ImportError:
        raise InvalidInput("PKCS#11 keys need PyKCS11: pip install 'cellar-registry[pkcs11]'") from None
    try:
        signer = sign_pkcs11.Signer(full)
    except Exception as exc:  # PyKCS11Error (wrong PIN, no token), ValueError (no such object) ...
        text = f"{type(exc).__name__}: {exc}".replace(pin, "***") if pin else f"{type(exc).__name__}: {exc}"
        raise KeyFileError(f"cannot open the PKCS#11 key {shown}: {text}") from None
    pem = public_pem(_ec(signer.public_key(), shown))
    return PrivateKey(path=None, passphrase=None, public_pem=pem, fingerprint=fingerprint_of(pem), shown=shown,
                      token_signer=signer)


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
