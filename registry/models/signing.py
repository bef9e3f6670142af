"""Result models of signatures and trust (registry.signing): keys, trust policies, signatures
and approvals, the policy check a promote runs, a checkout."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from registry.ledger import Release


class SigningKey(BaseModel):
    """A named public key (``registry key add``); ``trusted_by``: the environments that trust it."""

    name: str
    fingerprint: str
    public_key: str
    actor: str
    created_at: datetime
    trusted_by: list[str] = Field(default_factory=list)


class TrustPolicy(BaseModel):
    """An environment's trust policy: promote and rollback need ``require_signatures`` valid
    signatures (or approvals for this environment) from distinct keys named in ``trusted``."""

    env: str
    trusted: list[str] = Field(default_factory=list)
    require_signatures: int = 0


class SignatureInfo(BaseModel):
    """One signature of a version, or an approval (``env`` set) bound to one environment.
    ``problem``: why it does not verify (None: it does, or it was not checked)."""

    model: str
    version: str
    signer: str
    fingerprint: str
    env: str | None = None
    expires_at: datetime | None = None
    actor: str
    created_at: datetime
    verified: bool | None = None
    problem: str | None = None

    @property
    def kind(self) -> str:
        return "approval" if self.env else "signature"


class PolicyCheck(BaseModel):
    """Whether ``model@version`` meets ``env``'s trust policy: the signers counted and, when it
    does not, how many are missing and why the others did not count."""

    env: str
    model: str
    version: str
    required: int
    trusted: list[str]
    counted: list[str] = Field(default_factory=list)
    counted_keys: list[str] = Field(default_factory=list)  # their fingerprints, in the same order
    not_counted: list[str] = Field(default_factory=list)

    @property
    def missing(self) -> int:
        return max(0, self.required - len(self.counted))

    @property
    def ok(self) -> bool:
        return self.missing == 0


class CheckoutResult(BaseModel):
    model: str
    version: str
    path: str
    files: list[str]
    bytes: int


class ApprovalRecord(BaseModel):
    """What ran in an environment at a time, and who had signed and approved it then, verified now."""

    env: str
    at: datetime
    release: Release | None = None
    signatures: list[SignatureInfo] = Field(default_factory=list)
