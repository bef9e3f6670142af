"""Every error Cellar raises on purpose, under one root.

    CellarError                 exit 1: a user error with a one-line message saying what to do
    ├── InvalidInput            a bad name, version, ref, path or option
    │   ├── ManifestError       a manifest that does not validate (names the file and field)
    │   └── TemplateRefused     a probe body template the sandbox refused, or over a size or time limit
    ├── NotFound                no such model, version, environment, prompt or blob
    ├── NotInitialised          no registry home or database here
    ├── KeyFileError            the signing key file is unreadable, malformed or readable by others
    ├── SchemaOutOfDate         the database schema is not the one this program needs
    ├── Conflict                what the request would create or change already exists otherwise
    │   ├── VersionConflict     model@version exists with other content (versions are immutable)
    │   ├── AlreadyExists       an environment name or host port that is taken
    │   └── ImageMoved          the image tag points elsewhere than recorded at push
    ├── StorageError            the blob store could not write or read
    │   ├── NoSpace             the disk filled up; nothing was recorded
    │   └── CorruptBlob         a blob's bytes no longer match its digest
    ├── DatabaseUnavailable     the metadata database cannot be reached
    ├── DatabaseLocked          the metadata database stayed locked by another writer
    ├── EngineError             the Docker engine is unreachable or refused a call
    ├── RemoteError             an OCI registry (a remote) is unreachable, refused a call or
    │                           served bytes that do not match their digest
    ├── StepFailed              a deploy step failed in a way an automatic rollback answers
    │                           (health, exit, port, image); promote turns it into HealthGateFailed
    ├── AuditBroken             the audit log's hash chain is broken (names the first bad event)
    ├── PolicyNotMet            a version lacks the signatures an environment's trust policy requires
    ├── OperationInProgress     exit 3: another operation holds the environment
    ├── HealthGateFailed        exit 4: the new release failed and was rolled back (``result``
    │                           holds the rows recorded, for ``--json``)
    └── Interrupted             exit 130: Ctrl-C, after the previous release was put back
                                (also a KeyboardInterrupt, so library callers still see one)

Anything else escaping a command is a bug: the CLI reports it as an internal error, exit
``INTERNAL_ERROR_EXIT``, and says how to report it. The CLI maps each class above to
``exit_code`` and prints ``str(error)`` on one line.
"""

from __future__ import annotations

INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE (sysexits.h): not the user's mistake


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


class KeyFileError(CellarError):
    """The signing key file is unreadable, malformed or readable by others."""


class TemplateRefused(InvalidInput):
    """A probe body template the sandbox refused, or that broke a size or time limit."""


class SchemaOutOfDate(CellarError):
    pass


class Conflict(CellarError):
    pass


class VersionConflict(Conflict):
    pass


class AlreadyExists(Conflict):
    pass


class ImageMoved(Conflict):
    pass


class StorageError(CellarError):
    pass


class NoSpace(StorageError):
    pass


class CorruptBlob(StorageError):
    pass


class DatabaseUnavailable(CellarError):
    pass


class DatabaseLocked(CellarError):
    pass


class RemoteError(CellarError):
    pass


class EngineError(CellarError):
    pass


class StepFailed(CellarError):
    pass


class AuditBroken(CellarError):
    pass


class PolicyNotMet(CellarError):
    pass


class OperationInProgress(CellarError):
    exit_code = 3


class HealthGateFailed(CellarError):
    exit_code = 4

    def __init__(self, message: str, *, result: object = None):
        super().__init__(message)
        self.result = result  # a registry.models.FailedDeploy when raised by promote/rollback


class Interrupted(CellarError, KeyboardInterrupt):
    exit_code = 130
