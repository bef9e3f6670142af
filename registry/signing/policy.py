"""The trust policy, pure: which of a version's checked signatures count for an environment.

A signature counts when it verified (files and record as signed), its key is still registered
under a name the environment trusts, and, for an approval, it is bound to this environment and
not expired. Each key counts once however often it signed (the promoter's own included), so
"four eyes" is ``--require-signatures 2`` with two trusted keys.
"""

from __future__ import annotations

from datetime import datetime

from registry.models.signing import PolicyCheck, SignatureInfo, SigningKey, TrustPolicy


def evaluate(policy: TrustPolicy, checked: list[SignatureInfo], keys: list[SigningKey], *,
             model: str, version: str, now: datetime) -> PolicyCheck:
    """``checked``: the version's signatures with ``verified``/``problem`` filled in."""
    by_fingerprint = {k.fingerprint: k for k in keys}
    counted: dict[str, str] = {}  # fingerprint -> name
    not_counted: list[str] = []
    for sig in sorted(checked, key=lambda s: (s.env is not None, s.created_at)):
        why = _why_not(policy, sig, by_fingerprint.get(sig.fingerprint), now)
        if why is None and sig.fingerprint in counted:
            why = f"{sig.signer}: the same key again (each key counts once)"
        if why is None:
            counted[sig.fingerprint] = sig.signer
        else:
            not_counted.append(why)
    return PolicyCheck(env=policy.env, model=model, version=version, required=policy.require_signatures,
                       trusted=policy.trusted, counted=list(counted.values()), counted_keys=list(counted),
                       not_counted=not_counted)


def _why_not(policy: TrustPolicy, sig: SignatureInfo, key: SigningKey | None, now: datetime) -> str | None:
    what = f"{sig.signer}'s {sig.kind}"
    if not sig.verified:
        return f"{what} is refused: {sig.problem or 'not verified'}"
    if key is None:
        return f"{what}: its key {sig.fingerprint[:19]} is no longer registered"
    if key.name not in policy.trusted:
        return f"{what}: the key {key.name} is not trusted by {policy.env}"
    if sig.env is not None and sig.env != policy.env:
        return f"{what} is for {sig.env}, not {policy.env}"
    if sig.expires_at is not None and sig.expires_at <= now:
        return f"{what} for {policy.env} expired at {sig.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    return None


def refusal(check: PolicyCheck) -> str:
    """The one-line reason a promote or rollback is refused, naming what is missing."""
    ref = f"{check.model}@{check.version}"
    have = f"{len(check.counted)} ({', '.join(check.counted)})" if check.counted else "none"
    wanted = [name for name in check.trusted if name not in check.counted]
    text = (f"{ref} does not meet {check.env}'s trust policy: it needs {check.required} signature(s) from "
            f"distinct trusted keys, has {have}; missing {check.missing} more from: {', '.join(wanted) or '-'}")
    if check.not_counted:
        text += "; not counted: " + "; ".join(check.not_counted)
    return text + (f". Sign with `registry sign {ref} --key KEY` or approve with "
                   f"`registry approve {ref} --env {check.env} --key KEY`; nothing was changed")
