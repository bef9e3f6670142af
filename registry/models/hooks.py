"""Results of the hook commands: what ``registry hook list/deliveries/test`` and ``--json`` show.

A hook's URL is shown masked (``registry.trust.secrets.mask_url``) or, when it lives in an
environment variable, as that variable's name: a model never carries a credential.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(defer_build=True)


class Hook(_Model):
    name: str
    url: str  # masked, or "$VAR" for a URL read from the environment when delivering
    events: list[str]
    format: str  # json or slack
    signed_with: str | None = None  # the environment variable holding the HMAC secret
    web_url: str | None = None
    cursor: int  # the last audit event this hook is done with
    pending: int = 0  # matching events after the cursor
    attempts: int = 0  # failed attempts at the next event so far
    next_at: datetime | None = None  # when the next event is tried again, after a failure
    created_at: datetime
    created_by: str


class Delivery(_Model):
    id: int
    hook: str
    event_id: int | None  # None: a test
    action: str
    attempt: int
    at: datetime
    outcome: str  # delivered, failed, gave-up
    status: int | None = None
    detail: str = ""
    ms: int


class DeliveryPass(_Model):
    """One pass of ``registry hook deliver``: what it sent, per outcome."""

    delivered: int = 0
    failed: int = 0
    gave_up: int = 0
    busy: list[str] = []  # hooks another deliverer holds right now
    waiting: int = 0  # events still after their hooks' cursors (retrying later, or beyond this pass)
