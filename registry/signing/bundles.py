"""Bundles: what a version's signature covers, and signing and opening one with model-signing.

The files a signature lists are a checkout's: each weight at its path, each prompt as
``prompts/NAME``, and ``cellar-record.json`` (the record's canonical JSON, so its sha256 is the
manifest digest). The digests come from the record, so signing reads no weight bytes; promote
checks the blobs against the same digests. Cellar's own claims (model, version, signer, and for
an approval its environment and expiry) ride in the signed in-toto predicate under ``cellar``,
which model-signing's verifier ignores (its v1.0 predicate reads only ``serialization`` and
``resources``), so approvals verify upstream too.

model-signing 1.1 has no public call that signs a manifest it did not hash itself, so this uses
its ``manifest``, ``Payload``, ``sign_ec_key.Signer``/``Verifier`` classes directly: the bundle
is the library's own, byte for byte; the pin in pyproject.toml (``<1.2``) guards the internals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from model_signing import manifest as ms_manifest
from model_signing._hashing import hashing as ms_hashing
from model_signing._signing import sign_ec_key, sign_sigstore_pb
from model_signing._signing import signing as ms_signing

from registry.errors import InvalidInput
from registry.formats import canonical
from registry.signing.keys import PrivateKey

RECORD_FILE = "cellar-record.json"
CLAIMS = "cellar"  # the predicate field holding Cellar's claims


class BadSignature(ValueError):
    """A bundle that does not verify, or does not cover what it should; the message says which."""


@dataclass(frozen=True)
class Opened:
    """A verified bundle: the files it covers (path -> ``sha256:HEX``) and Cellar's claims."""

    files: dict[str, str]
    claims: dict[str, Any]


def files_of(record: dict, manifest_digest: str) -> dict[str, str]:
    """``{relative path: sha256:HEX}`` of a version's checkout (the record file included)."""
    pairs = [(w["path"], w["digest"]) for w in record.get("weights", [])]
    pairs += [(f"prompts/{p['name']}", p["digest"]) for p in record.get("prompts", [])]
    pairs.append((RECORD_FILE, manifest_digest))
    out: dict[str, str] = {}
    for rel, digest in pairs:
        parts = PurePosixPath(rel).parts
        if not rel or PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel or rel in out:
            raise InvalidInput(f"cannot sign or check out {rel!r}: it is not a unique relative path "
                               f"(is a weight named {RECORD_FILE}?)")
        out[rel] = digest
    return out


def record_bytes(record: dict) -> bytes:
    """The record file's content: the bytes the manifest digest is the sha256 of."""
    return canonical.dumps(record).encode()


def sign(key: PrivateKey, files: dict[str, str], *, name: str, claims: dict[str, Any]) -> str:
    """A Sigstore bundle (JSON) by ``key`` over ``files``, with ``claims`` in the predicate."""
    payload = ms_signing.Payload(_manifest(name, files))
    payload.statement.pb.predicate.update({CLAIMS: claims})
    if key.token_signer is not None:
        signer = key.token_signer
    else:
        assert key.path is not None  # a key file when not on a token
        try:
            # annotated ``str | None``, but cryptography needs the passphrase as bytes (model-signing 1.1.1)
            signer = sign_ec_key.Signer(key.path, key.passphrase)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:  # the file changed since it was read
            raise InvalidInput(f"{key.shown}: {exc}") from None
    signature = signer.sign(payload)
    assert isinstance(signature, sign_sigstore_pb.Signature)
    return signature.bundle.to_json()


def open_bundle(bundle: str, public_pem: str) -> Opened:
    """Check ``bundle`` with the public key: BadSignature unless model-signing's own verifier
    accepts it; then the files it covers and Cellar's claims, as signed."""
    try:
        # The library reads both from paths; an in-memory stand-in spares a temporary folder
        # per signature (its removal was 2 of the 3 ms a check took, bench/signatures.py).
        signature = sign_sigstore_pb.Signature.read(_InMemory(bundle))  # type: ignore[arg-type]
        signed = sign_ec_key.Verifier(_InMemory(public_pem)).verify(signature)  # type: ignore[arg-type]
        envelope = signature.bundle.dsse_envelope
        if envelope is None:
            raise ValueError("no DSSE envelope")
        statement = json.loads(envelope.payload)
    except Exception as exc:  # the library raises ValueError, InvalidSignature, KeyError ...
        raise BadSignature(f"the signature does not verify ({type(exc).__name__}: {exc})") from None
    files = {rd.identifier: f"{rd.digest.algorithm}:{rd.digest.digest_hex}" for rd in signed.resource_descriptors()}
    claims = statement.get("predicate", {}).get(CLAIMS)
    return Opened(files=files, claims=claims if isinstance(claims, dict) else {})


class _InMemory:
    """What model-signing reads from a ``pathlib.Path`` (``read_text``, ``read_bytes``), in memory."""

    def __init__(self, text: str):
        self._text = text

    def read_text(self, encoding: str = "utf-8") -> str:
        return self._text

    def read_bytes(self) -> bytes:
        return self._text.encode()


def mismatch(signed: dict[str, str], want: dict[str, str]) -> str | None:
    """Why the files a signature covers are not the version's (first difference), or None."""
    for rel in sorted(want.keys() | signed.keys()):
        if rel not in signed:
            return f"{rel} is not covered by the signature"
        if rel not in want:
            return f"the signature covers {rel}, which the version does not have"
        if signed[rel] != want[rel]:
            what = "the record (image, runtime, probes)" if rel == RECORD_FILE else rel
            return f"{what} is not what was signed"
    return None


def _manifest(name: str, files: dict[str, str]) -> ms_manifest.Manifest:
    items = [ms_manifest.FileManifestItem(path=PurePosixPath(rel),
                                          digest=ms_hashing.Digest("sha256", bytes.fromhex(d.split(":", 1)[1])))
             for rel, d in sorted(files.items())]
    return ms_manifest.Manifest(name, items, ms_manifest._FileSerialization("sha256", allow_symlinks=False))
