"""Who may hold an environment: a lock names its operation, actor, host and pid, so a lock
whose owner died can be told from one that is merely busy. The rows live in
``registry.store.sql.locks``; this module decides."""

from __future__ import annotations

import os
import socket

from registry import clock
from registry.models import Lock
from registry.store.files.blobs import process_alive


def new_lock(env: str, *, operation: str, target: str, actor: str) -> Lock:
    """A lock for this process."""
    return Lock(env=env, operation=operation, target=target, actor=actor, host=socket.gethostname(),
                pid=os.getpid(), started_at=clock.now())


def holder_gone(lock: Lock) -> bool:
    """True when the lock's owner provably no longer runs: same host and its pid is dead."""
    return lock.host == socket.gethostname() and not process_alive(lock.pid)


def busy_message(lock: Lock) -> str:
    """Who holds the environment, and what to do: only a lock from another host needs --force,
    since this host can tell a dead pid itself (and promote recovers a dead owner on its own)."""
    ago = max(0, int((clock.now() - lock.started_at).total_seconds()))
    held = (f"another operation ({lock.operation} {lock.target} by {lock.actor}, {ago} s ago) is in progress "
            f"on {lock.env} (pid {lock.pid} on {lock.host})")
    if lock.host != socket.gethostname():
        return (f"{held}; wait for it, or if that process on {lock.host} is gone "
                f"run `registry recover --env {lock.env} --force`")
    if holder_gone(lock):
        return f"{held}, which has exited; run `registry recover --env {lock.env}`"
    return (f"{held}; wait for it, or if it hangs stop it (kill {lock.pid}), "
            f"then run `registry recover --env {lock.env}`")
