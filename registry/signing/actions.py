"""Signing operations: key add/remove, trust policies, sign and approve, checkout, signature
export, and ``require_policy``, the check promote and rollback run before changing anything."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from registry import clock
from registry.action import Action
from registry.configuration import Configuration
from registry.errors import AlreadyExists, CorruptBlob, InvalidInput, NotFound, PolicyNotMet, StorageError
from registry.models import check_name
from registry.models.signing import ApprovalRecord, CheckoutResult, PolicyCheck, SignatureInfo, SigningKey, TrustPolicy
from registry.signing import bundles, keys, policy
from registry.store.sql import environments, events, versions
from registry.store.sql import signatures as store
from registry.store.sql.versions import StoredRecord
from registry.versions import asof

# --- keys and trust ------------------------------------------------------------------------


class AddKey(Action):
    """``AddKey(cfg, actor=...).run(name, public_key_file)``: name a public key (audited)."""

    def run(self, name: str, public_key_file: str | Path) -> SigningKey:
        _checked_name(name, "key name")
        pem = keys.load_public(public_key_file)
        key = SigningKey(name=name, fingerprint=keys.fingerprint_of(pem), public_key=pem, actor=self.actor,
                         created_at=clock.now())
        with self.cfg.store.write() as conn:
            for other in store.keys(conn):
                if other.name == name:
                    raise AlreadyExists(f"a key named {name!r} exists ({other.fingerprint[:19]}): "
                                        f"remove it first with `registry key remove {name}`")
                if other.fingerprint == key.fingerprint:
                    raise AlreadyExists(f"this key is registered already, as {other.name!r}: one key, one name, "
                                        "so it can never count twice")
            rows = store.add_key(conn, key)
            events.append(conn, actor=self.actor, action="key-add", object=f"key:{name}",
                          detail={"name": name, "fingerprint": key.fingerprint, "rows": rows},
                          db_user=self.cfg.store.db_user(conn))
        return key


class RemoveKey(Action):
    """``RemoveKey(cfg, actor=...).run(name)``: forget a key; its signatures stop counting."""

    def run(self, name: str, *, reason: str | None = None) -> SigningKey:
        with self.cfg.store.write() as conn:
            key = _key_named(store.keys(conn), name)
            rows = store.remove_key(conn, key)
            events.append(conn, actor=self.actor, action="key-remove", object=f"key:{name}", reason=reason,
                          detail={"name": name, "fingerprint": key.fingerprint, "trusted_by": key.trusted_by,
                                  "rows": rows},
                          db_user=self.cfg.store.db_user(conn))
        return key


class SetTrust(Action):
    """``SetTrust(cfg, actor=...).run(env, trusted=[...], require_signatures=N)`` (audited)."""

    def run(self, env_name: str, *, trusted: list[str] | None, require_signatures: int | None,
            reason: str | None = None) -> TrustPolicy:
        with self.cfg.store.write() as conn:
            env = environments.named_or_default(conn, env_name)
            old = store.policy(conn, env.name)
            names = list(dict.fromkeys(old.trusted if trusted is None else trusted))
            need = old.require_signatures if require_signatures is None else require_signatures
            known = {k.name for k in store.keys(conn)}
            if unknown := [n for n in names if n not in known]:
                raise NotFound(f"no key named {', '.join(unknown)}: add it with `registry key add NAME PUBLIC_KEY`")
            if need < 0 or need > len(names):
                raise InvalidInput(f"--require-signatures {need} needs at least that many trusted keys "
                                   f"({len(names)} trusted: {', '.join(names) or 'none'}); add them with --trust")
            if env.protected and not (reason and reason.strip()):
                raise InvalidInput(f"{env.name} is protected: say why with --reason")
            new = TrustPolicy(env=env.name, trusted=names, require_signatures=need)
            rows = store.set_policy(conn, new)
            events.append(conn, actor=self.actor, action="env-trust", object=env.name, env=env.name, reason=reason,
                          detail={"trusted": names, "require_signatures": need,
                                  "before": old.model_dump(exclude={"env"}), "rows": rows},
                          db_user=self.cfg.store.db_user(conn))
        return new


# --- sign and approve --------------------------------------------------------------------


class Sign(Action):
    """``Sign(cfg, actor=...).run(model, version, key_file=...)``: a signature of the version by
    the key (registered with ``key add``); with ``env``, an approval bound to that environment."""

    def run(self, model: str, version: str, *, key_file: str | Path, env: str | None = None,
            expires: datetime | None = None) -> SignatureInfo:
        key = keys.load_private(key_file, self.cfg.environ)
        try:
            return self._sign(key, model, version, env=env, expires=expires)
        finally:
            key.close()

    def _sign(self, key: keys.PrivateKey, model: str, version: str, *, env: str | None,
              expires: datetime | None) -> SignatureInfo:
        now = clock.now()
        expires = clock.utc(expires) if expires is not None else None
        if expires is not None and env is None:
            raise InvalidInput("--expires applies to an approval: give --env too")
        if expires is not None and expires <= now:
            raise InvalidInput(f"--expires {expires:%Y-%m-%d %H:%M} UTC is in the past")
        with self.cfg.store.read() as conn:
            stored = versions.record_of(conn, model, version)
            signer = _registered(conn, key)
            if env is not None:
                env = environments.named_or_default(conn, env).name
        for item in [*stored.record["weights"], *stored.record["prompts"]]:
            self.cfg.blobs.check(item["digest"], trust_stamp=True)  # sign only bytes that are intact
        info = SignatureInfo(model=model, version=version, signer=signer.name, fingerprint=key.fingerprint, env=env,
                             expires_at=expires, actor=self.actor, created_at=now)
        bundle = bundles.sign(key, bundles.files_of(stored.record, stored.digest), name=f"{model}@{version}",
                              claims=_claims(info, stored))
        with self.cfg.store.write() as conn:
            if versions.record_of(conn, model, version).digest != stored.digest or \
                    _registered(conn, key).name != signer.name:
                raise InvalidInput(f"{model}@{version} or the key changed while signing: nothing was recorded")
            store.add_signature(conn, info, bundle)
            events.append(conn, actor=self.actor, action="approve" if env else "sign", object=f"{model}@{version}",
                          model=model, env=env,
                          detail={"signer": signer.name, "fingerprint": key.fingerprint,
                                  "manifest_digest": stored.digest,
                                  "expires_at": expires.isoformat() if expires else None},
                          db_user=self.cfg.store.db_user(conn))
        return info.model_copy(update={"verified": True})


def parse_expiry(text: str, *, now: datetime | None = None) -> datetime:
    """``--expires``: an age from now (``30m``, ``12h``, ``7d``, ``2w``) or an ISO date/time (UTC
    when no zone is given)."""
    now = now or clock.now()
    if m := re.fullmatch(r"\s*(\d{1,6})([mhdw])\s*", text):
        return now + timedelta(**{_UNITS[m[2]]: int(m[1])})
    try:
        return clock.utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError:
        raise InvalidInput(f"--expires {text!r}: write an ISO date/time (2026-12-31T18:00) or an age "
                           "like 12h, 7d, 2w") from None


_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def check_signer(cfg: Configuration, key_file: str | Path) -> None:
    """Before a ``push --sign-key``: the key opens and is registered, so the push is not left unsigned."""
    key = keys.load_private(key_file, cfg.environ)
    try:
        with cfg.store.read() as conn:
            _registered(conn, key)
    finally:
        key.close()


def _claims(info: SignatureInfo, stored: StoredRecord) -> dict:
    claims = {"model": info.model, "version": info.version, "manifest_digest": stored.digest,
              "signer": info.signer, "fingerprint": info.fingerprint, "purpose": info.kind,
              "signed_at": info.created_at.isoformat()}
    if info.env is not None:
        claims["env"] = info.env
    if info.expires_at is not None:
        claims["expires_at"] = info.expires_at.isoformat()
    return claims


def _registered(conn, key: keys.PrivateKey) -> SigningKey:
    for known in store.keys(conn):
        if known.fingerprint == key.fingerprint:
            return known
    raise NotFound(f"the key {key.shown} ({key.fingerprint[:19]}) is not registered: add its public key first "
                   "with `registry key add NAME PUBLIC_KEY` (its private key never goes into the registry)")


# --- reading and checking -----------------------------------------------------------------


def signatures_of(cfg: Configuration, model: str, version: str) -> list[SignatureInfo]:
    """The version's signatures and approvals, each verified now against its registered key and
    the version's files and record (``verified``, and ``problem`` when it fails)."""
    with cfg.store.read() as conn:
        stored = versions.record_of(conn, model, version)
        registered = store.keys(conn)
        found = store.signatures(conn, model, version)
    want = bundles.files_of(stored.record, stored.digest)
    by_fingerprint = {k.fingerprint: k for k in registered}
    return [_checked(info, bundle, by_fingerprint.get(info.fingerprint), want) for info, bundle in found]


def _checked(info: SignatureInfo, bundle: str, key: SigningKey | None, want: dict[str, str]) -> SignatureInfo:
    problem = _problem(info, bundle, key, want)
    return info.model_copy(update={"verified": problem is None, "problem": problem})


def _problem(info: SignatureInfo, bundle: str, key: SigningKey | None, want: dict[str, str]) -> str | None:
    if key is None:
        return f"its key {info.fingerprint[:19]} is not registered (any more)"
    try:
        opened = bundles.open_bundle(bundle, key.public_key)
    except bundles.BadSignature as exc:
        return str(exc)
    if (diff := bundles.mismatch(opened.files, want)) is not None:
        return f"{diff}: the files or record no longer match the signature"
    claims = opened.claims
    signed = (claims.get("model"), claims.get("version"), claims.get("env"), claims.get("expires_at"))
    recorded = (info.model, info.version, info.env, info.expires_at.isoformat() if info.expires_at else None)
    if signed != recorded:
        return "its recorded version, environment or expiry is not what was signed (edited in the database)"
    return None


def check_policy(cfg: Configuration, model: str, version: str, env_name: str) -> PolicyCheck:
    """How ``model@version`` stands against ``env_name``'s trust policy, every signature verified."""
    with cfg.store.read() as conn:
        rule = store.policy(conn, env_name)
        if rule.require_signatures == 0:  # the usual case costs one read of two rows
            return PolicyCheck(env=env_name, model=model, version=version, required=0, trusted=rule.trusted)
        registered = store.keys(conn)
    checked = signatures_of(cfg, model, version)
    return policy.evaluate(rule, checked, registered, model=model, version=version, now=clock.now())


def require_policy(cfg: Configuration, model: str, version: str, env_name: str) -> dict[str, str]:
    """PolicyNotMet, naming what is missing, unless the version meets the environment's policy:
    what promote and rollback call before they change anything. Returns the signers counted
    (name -> key fingerprint), for the event that records the deploy."""
    check = check_policy(cfg, model, version, env_name)
    if not check.ok:
        raise PolicyNotMet(policy.refusal(check))
    return dict(zip(check.counted, check.counted_keys))


def write_signature(cfg: Configuration, model: str, version: str, *, signer: str, env: str | None,
                    out: str | Path) -> SignatureInfo:
    """Write ``signer``'s bundle for the version (their approval for ``env`` when given) to ``out``,
    for ``model_signing verify key`` on a checkout."""
    with cfg.store.read() as conn:
        versions.record_of(conn, model, version)
        found = [(i, b) for i, b in store.signatures(conn, model, version) if i.signer == signer and i.env == env]
    if not found:
        what = f"approval by {signer} for {env}" if env else f"signature by {signer}"
        raise NotFound(f"{model}@{version} has no {what}: see `registry show {model}@{version}`")
    info, bundle = found[-1]
    _write_new(Path(out), bundle.encode())
    return info


# --- checkout ------------------------------------------------------------------------------


def checkout(cfg: Configuration, model: str, version: str, dest: str | Path) -> CheckoutResult:
    """Write the version's files (weights at their paths, prompts under ``prompts/``) and its
    record (``cellar-record.json``) into ``dest``, which must not exist or be empty. Each file is
    checked against its digest as it is copied; a failure leaves nothing behind."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInput(f"{dest} exists and is not an empty folder: check out into a new one")
    with cfg.store.read() as conn:
        stored = versions.record_of(conn, model, version)
    files = bundles.files_of(stored.record, stored.digest)
    tmp = dest.absolute().parent / f".{dest.name}.tmp-{secrets.token_hex(4)}"
    total = 0
    try:
        for rel, digest in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel == bundles.RECORD_FILE:
                target.write_bytes(bundles.record_bytes(stored.record))
                total += target.stat().st_size
            else:
                total += _copy_checked(cfg.blobs.path(digest), target, digest)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except OSError as exc:
        raise StorageError(f"cannot check out into {dest}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CheckoutResult(model=model, version=version, path=str(dest), files=sorted(files), bytes=total)


def _copy_checked(src: Path, dst: Path, digest: str) -> int:
    hasher, size = hashlib.sha256(), 0
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(1 << 20):
                hasher.update(chunk)
                fout.write(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise CorruptBlob(f"blob {digest[:19]} is missing from the store: run `registry verify`") from None
    if "sha256:" + hasher.hexdigest() != digest:
        raise CorruptBlob(f"blob {digest[:19]} no longer matches its digest: nothing was checked out "
                          "(run `registry verify`)")
    return size


def _write_new(out: Path, data: bytes) -> None:
    tmp = out.with_name(f".{out.name}.tmp-{secrets.token_hex(4)}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from None


def _key_named(registered: list[SigningKey], name: str) -> SigningKey:
    for key in registered:
        if key.name == name:
            return key
    raise NotFound(f"no key named {name!r}: see `registry key list`")


def _checked_name(value: str, what: str) -> str:
    try:
        return check_name(value, what)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


# --- who approved what ran ------------------------------------------------------------------


def approvals_at(cfg: Configuration, env_name: str | None, at: datetime) -> ApprovalRecord:
    """The release serving in ``env_name`` at ``at`` (``registry.versions.asof``: none while the
    environment was dark), and its signatures and approvals for that environment made by then,
    verified now."""
    answer = asof.as_of(cfg, env_name, at)
    env, release = answer.env, answer.release
    if release is None:
        return ApprovalRecord(env=env, at=at)
    found = [s for s in signatures_of(cfg, release.model, release.version)
             if s.created_at <= at and s.env in (None, env)]
    return ApprovalRecord(env=env, at=at, release=release, signatures=found)
