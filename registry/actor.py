"""Who is acting: --actor, else $REGISTRY_ACTOR, else git's user.name <user.email>, else the OS user."""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Callable

from registry.inputs import check_actor


def identify(explicit: str | None = None, *, git_identity: Callable[[], str | None] | None = None) -> str:
    """The actor's name; ``git_identity`` replaces the git probe (e.g. with a cached one).
    InvalidInput when it is too long or holds control characters (a newline would fake a row
    in every table that shows it)."""
    for candidate in (explicit, os.environ.get("REGISTRY_ACTOR")):
        if candidate and candidate.strip():
            return check_actor(candidate.strip())
    found = (git_identity or git_user)()  # only probed when needed: it spawns git
    return check_actor(found.strip() if found and found.strip() else getpass.getuser())


def git_user() -> str | None:
    """``user.name <user.email>`` from git's config (every level), or None."""
    # `git config` honours every config level (system, global, repo, includes) in ~2 ms.
    def get(key: str) -> str:
        try:
            out = subprocess.run(
                ["git", "config", "--get", key], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    name = get("user.name")
    if not name:
        return None
    email = get("user.email")
    return f"{name} <{email}>" if email else name
