"""What a hook receives: one audit event as JSON (schema ``cellar.event.v1``) or as Slack text,
and the headers that let the receiver check it came from this registry and is not a replay.

Signature (like GitHub's ``X-Hub-Signature-256``, with the time inside what is signed, as
Stripe's): ``X-Cellar-Signature-256: sha256=HEX`` where HEX is HMAC-SHA256 with the hook's
secret over ``TIMESTAMP + "." + body``, and ``X-Cellar-Timestamp: TIMESTAMP`` (Unix seconds). A
receiver recomputes it and refuses a timestamp older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import quote, urlencode

from registry.trust.audit import Event

SCHEMA = "cellar.event.v1"


def body_of(event: Event, *, fmt: str, web_url: str | None) -> bytes:
    """The request body for ``event``: the JSON document, or ``{"text": ...}`` for Slack."""
    doc = document(event, web_url=web_url)
    if fmt == "slack":
        text = _slack_escape(doc["summary"])
        if link := doc["links"].get("environment") or doc["links"].get("version"):
            text += f" <{link}|open>"
        return json.dumps({"text": text}, ensure_ascii=False).encode()
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def document(event: Event, *, web_url: str | None) -> dict[str, Any]:
    """The event as a receiver sees it. ``id`` (the event's hash) is the same on every attempt:
    deliveries are at least once, so a receiver drops an ``id`` it has seen."""
    d = event.detail
    model, _, version = event.object.partition("@") if "@" in event.object else (event.model, "", "")
    doc: dict[str, Any] = {
        "schema": SCHEMA, "id": event.hash, "event_id": event.id, "action": event.action,
        "at": event.at.isoformat().replace("+00:00", "Z"), "actor": event.actor, "model": event.model or model or None,
        "version": version or None, "ref": event.object, "environment": event.env, "revision": d.get("revision"),
        "status": d.get("status"), "previous": d.get("previous"), "automatic": bool(d.get("automatic")),
        "reason": event.reason, "error": d.get("error"), "summary": summary(event),
        "detail": {k: v for k, v in d.items() if k != "rows"},  # rows: the ledger's bindings, for the seals
        "links": links(event, version, web_url),
    }
    return doc


def summary(event: Event) -> str:
    """One line a person reads in a chat channel."""
    d, who, ref, env = event.detail, event.actor, event.object, event.env
    if event.action == "push":
        changed = d.get("prompts_changed") or []
        return f"{who} pushed {ref}" + (f" (prompts changed: {', '.join(changed)})" if changed else "")
    if event.action in ("promote", "rollback"):
        revision = f"revision {d.get('revision')}"
        if d.get("status") == "failed":
            verb = "promote" if event.action == "promote" else "rollback"
            return f"{who}'s {verb} of {ref} on {env} failed ({revision}): {d.get('error') or 'see registry history'}"
        if event.action == "promote":
            was = f"; was {d['previous']}" if d.get("previous") else ""
            return f"{who} promoted {ref} to {env} ({revision}{was})"
        how = "automatically " if d.get("automatic") else ""
        return f"{who} {how}rolled {env} back to {ref} ({revision})"
    if event.action == "deprecate":
        return f"{who} deprecated {ref}" + (f": {event.reason}" if event.reason else "")
    if event.action == "test":
        return f"{who} sent a test event"
    return f"{who}: {event.action} {ref}" + (f" on {env}" if env else "")


def links(event: Event, version: str, web_url: str | None) -> dict[str, str]:
    if not web_url:
        return {}
    base = web_url.rstrip("/")
    out = {"audit": f"{base}/audit?" + urlencode({"before": event.id + 1})}
    if event.model and version:
        out["version"] = f"{base}/v/{quote(event.model, safe='')}/{quote(version, safe='')}"
    if event.env:
        out["environment"] = f"{base}/envs/{quote(event.env, safe='')}"
    return out


def headers(body: bytes, *, event: Event, delivery: str, secret: str | None, timestamp: int) -> dict[str, str]:
    out = {"Content-Type": "application/json", "User-Agent": "cellar-hook/1", "X-Cellar-Event": event.action,
           "X-Cellar-Delivery": delivery, "X-Cellar-Timestamp": str(timestamp)}
    if secret:
        out["X-Cellar-Signature-256"] = "sha256=" + sign(secret, timestamp, body)
    return out


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
