"""What makes a write or a rename durable: the file, or the folder holding the name, flushed."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a folder (so the names created or renamed in it survive a power cut) or a file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
