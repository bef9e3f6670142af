"""``registry hook add/list/remove``: which events go where, signed with which secret.

A URL that carries a credential (a password, a token as user name or query value, the path of a
Slack-style webhook: whatever ``mask_url`` would hide) is refused on the command line and in
the database: it goes in an environment variable named by ``url_env``, read only by the process
that delivers. The HMAC secret is always such a variable (``secret_env``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from registry import clock, inputs
from registry.action import Action
from registry.errors import InvalidInput
from registry.models import check_name
from registry.models.hooks import Hook
from registry.store.sql import events
from registry.store.sql import hooks as store
from registry.trust.secrets import mask_url

# The audit actions a hook may ask for; `registry hook add --events` names some of them.
EVENTS = ("push", "promote", "rollback", "deprecate", "delete", "recover", "import", "approve", "sign", "alert",
          "env-add", "env-remove")
DEFAULT_EVENTS = ("push", "promote", "rollback", "deprecate", "approve", "alert")
FORMATS = ("json", "slack")
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


class AddHook(Action):
    """``AddHook(cfg, actor=...).run(name, ...)``: send the matching events from now on."""

    def run(self, name: str, *, url: str | None = None, url_env: str | None = None, events_: list[str] | None = None,
            secret_env: str | None = None, fmt: str = "json", web_url: str | None = None) -> Hook:
        try:
            check_name(name, "hook name")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if (url is None) == (url_env is None):
            raise InvalidInput("give the hook's URL, or --url-env VAR naming the environment variable that holds it")
        if url is not None:
            check_url(url, "the hook URL")
            if mask_url(url) != url:
                raise InvalidInput("this hook URL carries a secret (a password, a token as user name or query value, "
                                   "or a webhook service's path): export it in an environment variable and give "
                                   "--url-env VAR instead, so that it is never stored or shown")
        for var, what in ((url_env, "--url-env"), (secret_env, "--secret-env")):
            if var is not None and not _ENV_VAR.fullmatch(var):
                raise InvalidInput(f"{what}: {var!r} is not an environment variable name (letters, digits, _)")
        if url_env is not None:
            check_url(self.cfg.environ.get(url_env, ""), f"${url_env}", hidden=True)
        if secret_env is not None and not self.cfg.environ.get(secret_env):
            raise InvalidInput(f"environment variable {secret_env} is empty here: export the hook's secret in it "
                               "(the deliverer reads it there too)")
        chosen = list(dict.fromkeys(events_ or DEFAULT_EVENTS))
        if unknown := [e for e in chosen if e not in EVENTS]:
            raise InvalidInput(f"unknown event {unknown[0]!r} in --events: choose from {', '.join(EVENTS)}")
        if fmt not in FORMATS:
            raise InvalidInput(f"unknown --format {fmt!r}: choose json or slack")
        if web_url is not None:
            check_url(web_url, "--web-url")
        row: dict[str, Any] = {"name": name, "url": url, "url_env": url_env, "secret_env": secret_env, "events": chosen,
               "format": fmt, "web_url": web_url, "created_at": clock.now(), "created_by": self.actor}
        with self.cfg.store.write() as conn:
            row["cursor"] = store.head_event(conn)  # from now on: a new hook does not replay the past
            store.add(conn, row)
            events.append(conn, actor=self.actor, action="hook-add", object=name, detail=described(row),
                          db_user=self.cfg.store.db_user(conn))
        return hook_of({**row, "attempts": 0, "next_at": None})


class RemoveHook(Action):
    def run(self, name: str) -> Hook:
        with self.cfg.store.write() as conn:
            row = store.remove(conn, name)
            events.append(conn, actor=self.actor, action="hook-remove", object=name, detail=described(row),
                          db_user=self.cfg.store.db_user(conn))
        return hook_of(row)


def hooks(cfg) -> list[Hook]:
    with cfg.store.read() as conn:
        return [hook_of(r, pending=store.count_after(conn, r["cursor"], r["events"])) for r in store.all_(conn)]


def hook_of(row: dict, *, pending: int = 0) -> Hook:
    return Hook(name=row["name"], url=shown_url(row), events=row["events"], format=row["format"],
                signed_with=row["secret_env"], web_url=row["web_url"], cursor=row["cursor"], pending=pending,
                attempts=row["attempts"], next_at=row["next_at"], created_at=row["created_at"],
                created_by=row["created_by"])


def shown_url(row: dict) -> str:
    return f"${row['url_env']}" if row["url_env"] else mask_url(row["url"])


def described(row: dict) -> dict:
    """What the audit log keeps of a hook: never a credential."""
    return {"url": shown_url(row), "events": row["events"], "format": row["format"],
            "signed_with": row["secret_env"]}


def check_url(url: str, what: str, *, hidden: bool = False) -> None:
    shown = "it" if hidden else repr(url)
    inputs.check_text(url, what, 2048, secret=hidden)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise InvalidInput(f"{what}: {shown} is not a URL; give http://HOST[:PORT]/PATH or https://...") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{what}: {shown} is not an http:// or https:// URL with a host")
