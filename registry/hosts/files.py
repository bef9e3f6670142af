"""The files a version's container sees at /model, wherever they come from (a snapshot folder
here, or a host's cache): no Docker import, so the deploy modules load it for nothing."""

from __future__ import annotations

from pathlib import PurePosixPath

from registry.errors import StorageError


def version_files(record: dict) -> list[tuple[str, str]]:
    """(relative path, digest) of every file a version's container sees at /model; each path is
    checked to stay inside it."""
    out = [(w["path"], w["digest"]) for w in record.get("weights", [])]
    out += [(f"prompts/{p['name']}", p["digest"]) for p in record.get("prompts", [])]
    seen: set[str] = set()
    for rel, _ in out:
        parts = PurePosixPath(rel).parts
        if not rel or PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel or rel in seen:
            raise StorageError(f"refusing snapshot path {rel!r}: it is not a unique relative path")
        seen.add(rel)
    return out
