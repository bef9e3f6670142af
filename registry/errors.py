"""Every error Cellar raises on purpose, under one root.

    CellarError                 exit 1: a user error with a one-line message saying what to do
    ├── InvalidInput            a bad name, version, ref, path or option
    │   └── ManifestError       a manifest that does not validate (names the file and field)
    ├── NotFound                no such model, version, environment, prompt or blob
    ├── NotInitialised          no registry home or database here
    ├── SchemaOutOfDate         the database schema is not the one this program needs
    ├── VersionConflict         model@version exists with other content (versions are immutable)
    ├── StorageError            the blob store could not write or read
    │   ├── NoSpace             the disk filled up; nothing was recorded
    │   └── CorruptBlob         a blob's bytes no longer match its digest
    ├── EngineError             the Docker engine is unreachable or refused a call
    ├── AuditBroken             the audit log's hash chain is broken (names the first bad event)
    ├── OperationInProgress     exit 3: another operation holds the environment
    ├── HealthGateFailed        exit 4: the new release failed and was rolled back (``result``
    │                           holds the rows recorded, for ``--json``)
    └── Interrupted             exit 130: Ctrl-C, after the previous release was put back
                                (also a KeyboardInterrupt, so library callers still see one)

The CLI maps each to ``exit_code`` and prints ``str(error)`` on one line.
"""

from __future__ import annotations


class CellarError(Exception):
    """Root of every error Cellar raises on purpose."""

    exit_code = 1


class InvalidInput(CellarError):
    pass


class ManifestError(InvalidInput):
    pass


class NotFound(CellarError):
    pass


class NotInitialised(CellarError):
    pass


class SchemaOutOfDate(CellarError):
    pass


class VersionConflict(CellarError):
    pass


class StorageError(CellarError):
    pass


class NoSpace(StorageError):
    pass


class CorruptBlob(StorageError):
    pass


class EngineError(CellarError):
    pass


class AuditBroken(CellarError):
    pass


class OperationInProgress(CellarError):
    exit_code = 3


class HealthGateFailed(CellarError):
    exit_code = 4

    def __init__(self, message: str, *, result: object = None):
        super().__init__(message)
        self.result = result  # a registry.deploy.models.FailedDeploy when raised by promote/rollback


class Interrupted(CellarError, KeyboardInterrupt):
    exit_code = 130
