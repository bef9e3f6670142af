"""A version as a CNCF ModelPack artifact, and back (pure: bytes in, bytes out).

The manifest (artifactType ``application/vnd.cncf.model.manifest.v1+json``) has a ModelPack
config (``descriptor``, ``config``, ``modelfs``: its schema allows nothing else) and one raw layer
per file, its path in ``org.cncf.model.filepath``; a layer's digest is the Cellar blob's, so an
unchanged file is the same layer in every version and is never uploaded twice. Prompt templates
are layers of their own (ModelPack's ``doc`` type, under ``prompts/``). Cellar's record (runtime,
probes, image digest, changelog entry, git provenance) rides in one more layer of type
``application/vnd.cellar.version.v1+json``; tools that do not know it ignore it.

Everything here derives from what the version recorded (its time included), serialised with a
fixed key order, so the same version always gives the same manifest digest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from registry.errors import InvalidInput

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_TYPE = "application/vnd.cncf.model.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CELLAR_TYPE = "application/vnd.cellar.version.v1+json"
WEIGHT, WEIGHT_CONFIG, DOC = ("application/vnd.cncf.model.weight.v1.raw",
                              "application/vnd.cncf.model.weight.config.v1.raw",
                              "application/vnd.cncf.model.doc.v1.raw")
FILEPATH = "org.cncf.model.filepath"
PROMPT_ANNOTATION = "dev.cellar.prompt"
PROMPTS_DIR = "prompts"
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".gguf", ".pt", ".pth", ".onnx", ".h5", ".ckpt", ".msgpack", ".npz"}
DOC_SUFFIXES = {".md", ".txt", ".rst", ".pdf"}
_RAW_TYPES = {WEIGHT, WEIGHT_CONFIG, DOC, "application/vnd.cncf.model.code.v1.raw",
              "application/vnd.cncf.model.dataset.v1.raw"}


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str
    path: str  # org.cncf.model.filepath
    prompt: str | None = None

    def descriptor(self) -> dict:
        notes = {FILEPATH: self.path, **({PROMPT_ANNOTATION: self.prompt} if self.prompt else {})}
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, "annotations": notes}


@dataclass
class Artifact:
    """What a push sends: the file layers (from the blob store), two small blobs, the manifest."""

    layers: list[Layer]
    config: bytes
    cellar: bytes
    manifest: bytes
    record: dict

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    def small_blobs(self) -> dict[str, bytes]:
        return {digest_of(self.config): self.config, digest_of(self.cellar): self.cellar}


@dataclass
class Incoming:
    """A version as read from an artifact: what to fetch, and what to record once it is verified."""

    model: str
    version: str
    record: dict
    changelog: dict
    provenance: dict | None
    manifest_digest: str
    files: list[tuple[str, str, str, int]]  # (kind, name, digest, size), as VersionRows holds them
    foreign: bool = False  # written by another tool: a version with weights and no prompts
    warnings: list[str] = field(default_factory=list)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def build(*, model: str, version: str, manifest_digest: str, record: dict, changelog: dict,
          provenance: dict | None) -> Artifact:
    """The artifact of one recorded version."""
    layers = [Layer(w["digest"], w["size"], _weight_type(w["path"]), w["path"]) for w in record.get("weights", [])]
    layers += [Layer(p["digest"], p["size"], DOC, f"{PROMPTS_DIR}/{p['name']}", prompt=p["name"])
               for p in record.get("prompts", [])]
    cellar = canonical_json({"cellar": 1, "model": model, "version": version, "manifest_digest": manifest_digest,
                             "record": record, "changelog": changelog, "provenance": provenance})
    config = canonical_json({
        "descriptor": {"name": model, "version": version, "createdAt": changelog["created_at"],
                       **({"description": changelog["message"]} if changelog.get("message") else {})},
        "config": {**({"format": fmt} if (fmt := _format(record)) else {})},
        "modelfs": {"type": "layers", "diffIds": [layer.digest for layer in layers] or [digest_of(cellar)]},
    })
    descriptors = [layer.descriptor() for layer in layers]
    descriptors.append({"mediaType": CELLAR_TYPE, "digest": digest_of(cellar), "size": len(cellar)})
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": digest_of(config), "size": len(config)},
        "layers": descriptors,
        "annotations": {"org.opencontainers.image.created": changelog["created_at"],
                        "org.opencontainers.image.title": model, "org.opencontainers.image.version": version,
                        "dev.cellar.manifest-digest": manifest_digest},
    })
    return Artifact(layers=layers, config=config, cellar=cellar, manifest=manifest, record=record)


def _weight_type(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    return WEIGHT if suffix in WEIGHT_SUFFIXES else DOC if suffix in DOC_SUFFIXES else WEIGHT_CONFIG


def _format(record: dict) -> str | None:
    suffixes = {PurePosixPath(w["path"]).suffix.lower() for w in record.get("weights", [])}
    return next((s[1:] for s in (".safetensors", ".gguf", ".onnx") if s in suffixes), None)


# --- reading ---------------------------------------------------------------------------------


def parse_manifest(data: bytes, *, where: str) -> dict:
    """The manifest, checked to be an OCI image manifest with a config and layers."""
    try:
        manifest = json.loads(data)
    except ValueError:
        raise InvalidInput(f"{where} is not a JSON manifest; nothing was recorded") from None
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2 or not isinstance(
            manifest.get("layers"), list) or not isinstance(manifest.get("config"), dict):
        raise InvalidInput(f"{where} is not an OCI image manifest (an index or an old schema?); nothing was recorded")
    return manifest


def cellar_layer(manifest: dict) -> dict | None:
    return next((d for d in manifest["layers"] if d.get("mediaType") == CELLAR_TYPE), None)


def from_cellar(manifest: dict, cellar: bytes, *, where: str) -> Incoming:
    """A version Cellar pushed: its record layer, checked against the manifest's layers."""
    try:
        doc = json.loads(cellar)
        record, model, version = doc["record"], doc["model"], doc["version"]
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(f"{where}: Cellar's record layer is not readable; nothing was recorded") from None
    files = [("weight", w["path"], w["digest"], w["size"]) for w in record.get("weights", [])]
    files += [("prompt", p["name"], p["digest"], p["size"]) for p in record.get("prompts", [])]
    layers = {(d.get("digest"), d.get("size")) for d in manifest["layers"]}
    for kind, name, digest, size in files:
        if (digest, size) not in layers:
            raise InvalidInput(f"{where}: {kind} {name} ({digest[:19]}) is in Cellar's record but not a layer of "
                               "the artifact; nothing was recorded")
    return Incoming(model=model, version=version, record=record, changelog=doc.get("changelog") or {},
                    provenance=doc.get("provenance"), manifest_digest=str(doc.get("manifest_digest", "")),
                    files=files)


def from_modelpack(manifest: dict, config: dict, *, model: str, version: str, where: str,
                   empty_record: dict) -> Incoming:
    """A ModelPack artifact another tool wrote: every raw layer with a file path is a weight file."""
    weights, skipped = [], []
    for d in manifest["layers"]:
        path = (d.get("annotations") or {}).get(FILEPATH)
        if d.get("mediaType") not in _RAW_TYPES:
            skipped.append(f"{path or d.get('digest', '?')[:19]} ({d.get('mediaType')})")
            continue
        if not path:
            raise InvalidInput(f"{where}: a layer {d.get('digest', '?')[:19]} has no {FILEPATH} annotation; "
                               "nothing was recorded")
        weights.append({"path": check_relative(path, where), "digest": d["digest"], "size": int(d["size"])})
    if skipped:
        raise InvalidInput(f"{where}: layers of a type Cellar cannot store as files ({', '.join(skipped[:3])}): "
                           "only raw ModelPack layers are read; nothing was recorded")
    if not weights:
        raise InvalidInput(f"{where} has no file layers: is it a ModelPack artifact? nothing was recorded")
    if len({w["path"] for w in weights}) != len(weights):
        raise InvalidInput(f"{where}: two layers name the same file path; nothing was recorded")
    found = config.get("descriptor")
    descriptor: dict = found if isinstance(found, dict) else {}
    record = {**empty_record, "weights": sorted(weights, key=lambda w: w["path"])}
    listed = descriptor.get("authors")
    authors: list = listed if isinstance(listed, list) else []
    changelog = {"message": str(descriptor.get("description") or f"pulled from {where}"),
                 "actor": ", ".join(map(str, authors)), "created_at": descriptor.get("createdAt")}
    return Incoming(model=model, version=version, record=record, changelog=changelog, provenance=None,
                    manifest_digest="", foreign=True,
                    files=[("weight", w["path"], w["digest"], w["size"]) for w in record["weights"]])


def check_relative(path: str, where: str) -> str:
    """``path`` as a relative POSIX path inside the model; InvalidInput otherwise."""
    rel = PurePosixPath(path)
    if not rel.parts or rel.is_absolute() or ".." in rel.parts or "\\" in path:
        raise InvalidInput(f"{where}: file path {path!r} is not a relative path inside the model; nothing was "
                           "recorded")
    return rel.as_posix()
