"""Cellar: a model registry and rollback manager for models served from your own Docker hosts.

    from registry import Registry
    reg = Registry.open()
    reg.push("cellar.yaml")

Exports are loaded lazily so that ``registry --help`` does not pay for SQLAlchemy.
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["Registry", "CellarError", "Manifest", "VersionInfo", "VersionSummary", "PushResult"]

_WHERE = {
    "Registry": "registry.api",
    "CellarError": "registry.errors",
    "Manifest": "registry.models",
    "VersionInfo": "registry.models",
    "VersionSummary": "registry.models",
    "PushResult": "registry.models",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")
