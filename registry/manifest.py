"""Load a manifest (``cellar.yaml``) and resolve the files it names, before anything is written.

Every path is taken relative to the manifest's folder and must stay inside it, symlinks
included; errors name the file and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from registry.errors import ManifestError
from registry.models import Manifest
from registry.safetensors_index import SafetensorsError, TensorRange, is_safetensors, read_index

DEFAULT_NAME = "cellar.yaml"


@dataclass
class SourceFile:
    """A file a version stores: a weight (name = relative path) or a prompt (name = prompt name)."""

    kind: str
    name: str
    path: Path
    tensors: list[TensorRange] = field(default_factory=list)


@dataclass
class Resolved:
    manifest: Manifest
    root: Path
    files: list[SourceFile]

    @property
    def weights(self) -> list[SourceFile]:
        return [f for f in self.files if f.kind == "weight"]

    @property
    def prompts(self) -> list[SourceFile]:
        return [f for f in self.files if f.kind == "prompt"]


def load(path: str | Path, **overrides: Any) -> Resolved:
    """Parse and validate a manifest file, apply ``overrides`` (e.g. version), resolve its files."""
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest; write one or pass its path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc})") from None
    data = _parse_yaml(path, text)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return resolve(validate(data, source=str(path)), path.parent, source=str(path))


def validate(data: dict[str, Any], *, source: str) -> Manifest:
    """The manifest ``data`` describes, or a ManifestError naming ``source`` and the field."""
    try:
        manifest = Manifest.model_validate(data, context={"new_manifest": True})
    except ValidationError as exc:
        raise ManifestError(f"{source}: {_describe(exc)}") from None
    if not (manifest.weights or manifest.prompts or manifest.image):
        raise ManifestError(f"{source}: the version names no weights, prompts or image; "
                            "give at least one (e.g. --weights, --prompt NAME=PATH or --image)")
    return manifest


def resolve(manifest: Manifest, root: Path, *, source: str | None = None) -> Resolved:
    """Find every file the manifest names, refusing paths that leave ``root``.

    Errors name ``source`` (the manifest file, or "command line") and the field.
    """
    try:
        return _resolve(manifest, root.absolute())
    except ManifestError as exc:
        if source is None:
            raise
        raise ManifestError(f"{source}: {exc}") from None


def _resolve(manifest: Manifest, root: Path) -> Resolved:
    files: dict[tuple[str, str], SourceFile] = {}
    real_root = root.resolve()
    for i, entry in enumerate(manifest.weights):
        where = f"weights[{i}]"
        target = _inside(root, real_root, entry, where)
        if target.is_dir():
            found = list(_walk(root, real_root, target, where))
            if not found:
                raise ManifestError(f"{where}: folder {entry!r} holds no files; add the weights or remove the entry")
        else:
            found = [_regular_file(root, target, where)]
        for path in found:
            rel = path.relative_to(root).as_posix()
            _refuse_prompt_folder(rel, where)
            files[("weight", rel)] = SourceFile("weight", rel, path, _tensors(path, where))
    for name, entry in manifest.prompts.items():
        where = f"prompts.{name}"
        path = _regular_file(root, _inside(root, real_root, entry, where), where)
        _check_text(path, where)
        files[("prompt", name)] = SourceFile("prompt", name, path)
    return Resolved(manifest, root, list(files.values()))


def _parse_yaml(path: Path, text: str) -> dict[str, Any]:
    import yaml  # only pushes need it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster for 1,000 pushes
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"{path}{where}: malformed YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a mapping with model, version, ... at the top level")
    return data


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg.removeprefix('Value error, ')}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _inside(root: Path, real_root: Path, entry: str, where: str) -> Path:
    if not entry or "\x00" in entry or "\\" in entry or PurePosixPath(entry).is_absolute():
        raise ManifestError(f"{where}: {entry!r} must be a relative path inside {root}")
    target = root / entry
    if not _is_within(target.resolve(), real_root):
        raise ManifestError(f"{where}: {entry!r} points outside the manifest's folder {root}")
    if ".." in PurePosixPath(entry).parts:
        # the stored name is textual: "sub/../w.bin" would not be where the snapshot puts it
        raise ManifestError(f"{where}: {entry!r} contains '..'; write the path without it, relative to {root}")
    if not target.exists():
        raise ManifestError(f"{where}: {entry!r} does not exist in {root}")
    return target


def _refuse_prompt_folder(rel: str, where: str) -> None:
    # the snapshot puts prompts at /model/prompts/<name>: a weight there would clash with them
    if rel == "prompts" or rel.startswith("prompts/"):
        raise ManifestError(f"{where}: weight file {rel!r} is under prompts/, where the snapshot puts "
                            "the prompts; move it to another folder")


def _walk(root: Path, real_root: Path, folder: Path, where: str):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise ManifestError(
                    f"{where}: {Path(dirpath, name).relative_to(root)} is a symlinked folder; "
                    "list its target instead"
                )
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not _is_within(path.resolve(), real_root):
                raise ManifestError(f"{where}: {path.relative_to(root)} is a symlink pointing outside {root}")
            yield _regular_file(root, path, where)


def _regular_file(root: Path, path: Path, where: str) -> Path:
    if not path.is_file():
        raise ManifestError(f"{where}: {path.relative_to(root)} is not a regular file")
    if not os.access(path, os.R_OK):
        raise ManifestError(f"{where}: {path.relative_to(root)} is not readable; check its permissions")
    return path


def _tensors(path: Path, where: str) -> list[TensorRange]:
    if not is_safetensors(path):
        return []
    try:
        return read_index(path)
    except (SafetensorsError, OSError) as exc:
        raise ManifestError(f"{where}: {path.name} is not a valid safetensors file ({exc})") from None


def _check_text(path: Path, where: str) -> None:
    try:
        path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{where}: {path.name} is not UTF-8 text; prompt templates must be") from None
    except OSError as exc:
        raise ManifestError(f"{where}: cannot read {path.name} ({exc.strerror})") from None


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def from_flags(
    *,
    model: str,
    version: str | None,
    message: str | None,
    weights: list[str] | None,
    prompts: list[str] | None,
    image: str | None,
    root: Path,
) -> Resolved:
    """The manifest that ``registry push --model M --version V --weights ... --prompt N=P`` describes."""
    if not version:
        raise ManifestError("command line: --version is required with --model")
    named = {}
    for item in prompts or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise ManifestError(f"command line: --prompt {item!r} must be NAME=PATH")
        named[name] = path
    data = {"model": model, "version": version, "message": message or "",
            "weights": list(weights or []), "prompts": named, "image": image}
    return resolve(validate(data, source="command line"), root, source="command line")


# The public names (``from registry import load_manifest, manifest_from_flags``).
load_manifest = load
manifest_from_flags = from_flags
