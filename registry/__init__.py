"""Cellar: a model registry and rollback manager for models served from your own Docker hosts.

    from registry import Registry
    with Registry.open() as reg:
        reg.push("cellar.yaml")
        reg.promote("v1.3", env="production", reason="CAB-1432")

Every result model and every error class is importable from here; the CLI imports nothing
else. Exports are loaded lazily so that ``registry --help`` does not pay for SQLAlchemy.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "registry.api": ["Registry"],
    "registry.versions.manifest": ["load_manifest", "manifest_from_flags"],
    "registry.inputs": ["safe_for_terminal", "visible_text"],
    "registry.trust.secrets": ["scrub_for_display", "mask_url"],
    "registry.trust.seals": ["SealProblem"],
    "registry.models": [
        "Manifest", "Runtime", "Probe", "VersionSummary", "VersionInfo", "LogEntry", "PushResult", "InitResult",
        "Environment", "Step", "DeployResult", "FailedDeploy", "Lock", "EnvStatus", "HostStatus", "RecoverAction",
        "RecoverResult", "Tensor", "WeightFile", "PromptFile", "ImageRef", "Provenance", "FileProvenance", "Resolved",
    ],
    "registry.models.resources": ["Resources", "EnvRuntime", "runtime_overrides", "describe_gpus"],
    "registry.ledger": ["Release", "ReleaseStatus", "Operation", "HostState", "short_host"],
    "registry.models.upkeep": [
        "VerifyReport", "GcResult", "BackupResult", "RestoreResult", "ExportResult", "ImportResult",
        "Deprecation", "DeleteResult", "ProblemKind",
    ],
    "registry.models.remotes": ["RemotePushResult", "RemotePullResult", "RemoteVerifyReport", "RemoteVersionState"],
    "registry.remotes.settings": ["Remote"],
    "registry.trust.audit": ["Event", "AuditFilter", "Checkpoint", "Verification", "Problem"],
    "registry.models.signing": [
        "SigningKey", "TrustPolicy", "SignatureInfo", "PolicyCheck", "CheckoutResult", "ApprovalRecord",
    ],
    "registry.versions.asof": ["AsOf"],
    "registry.versions.blame": ["BlameLine"],
    "registry.versions.diffing": ["Diff"],
    "registry.web": ["create_app", "serve_ui", "ui_listen", "UiListen"],
    "registry.errors": [
        "CellarError", "InvalidInput", "ManifestError", "NotFound", "NotInitialised", "SchemaOutOfDate",
        "Conflict", "VersionConflict", "AlreadyExists", "ImageMoved", "StorageError", "NoSpace", "CorruptBlob",
        "DatabaseUnavailable", "DatabaseLocked", "EngineError", "StepFailed", "AuditBroken",
        "OperationInProgress", "HealthGateFailed", "Interrupted", "INTERNAL_ERROR_EXIT", "KeyFileError", "RemoteError",
        "TemplateRefused", "PolicyNotMet",
    ],
    "registry.models.probes": [
        "ProbeRun", "ProbeResult", "ProbeStatus", "RunOutcome", "HealthReport", "VersionHealth", "ChangePoint",
        "WatchAction", "WatchSummary", "MetricsSnapshot", "DeployedInfo",
    ],
    "registry.health.alerting": ["Webhook", "webhook_from_env"],
    "registry.models.hooks": ["Hook", "Delivery", "DeliveryPass"],
    "registry.health.watching": ["StopFlag", "stop_on_signals"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")
