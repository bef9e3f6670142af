"""Who is acting: --actor, else $REGISTRY_ACTOR, else git's user.name <user.email>, else the OS user."""

from __future__ import annotations

import getpass
import os
import subprocess


def resolve(explicit: str | None = None) -> str:
    for candidate in (explicit, os.environ.get("REGISTRY_ACTOR"), _git_identity()):
        if candidate and candidate.strip():
            return candidate.strip()[:255]
    return getpass.getuser()


def _git_identity() -> str | None:
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
