"""Crash points for tests: ``CELLAR_CRASH_AT=push:blobs-stored`` makes the process SIGKILL itself there.

Tests use it to kill a real process at an exact step and check what survives; it costs one
dict lookup when unset.
"""

from __future__ import annotations

import os
import signal


def crashpoint(name: str) -> None:
    if os.environ.get("CELLAR_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
