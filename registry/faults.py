"""Crash points and meeting points for tests, at named steps of an operation.

``CELLAR_CRASH_AT=push:blobs-stored`` makes the process SIGKILL itself there: tests kill a real
process at an exact step and check what survives. ``CELLAR_MEET_AT=push:blobs-stored:8:DIR``
makes it wait there (30 s at most) until 8 processes have reached that step, each leaving a
file in DIR: tests that need operations to overlap make them overlap, rather than hope a busy
machine lets them. Unset, each costs a dict lookup.
"""

from __future__ import annotations

import os
import signal
import time

MEET_S = 30.0  # a meeting point never waits longer: a test that miscounts fails, it does not hang


def crashpoint(name: str) -> None:
    if os.environ.get("CELLAR_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if (meet := os.environ.get("CELLAR_MEET_AT")) and meet.startswith(name + ":"):
        _meet(*meet[len(name) + 1:].split(":", 1))


def _meet(count: str, folder: str) -> None:
    with open(os.path.join(folder, f"{os.getpid()}"), "w"):
        pass
    deadline = time.monotonic() + MEET_S
    while len(os.listdir(folder)) < int(count) and time.monotonic() < deadline:
        time.sleep(0.01)
