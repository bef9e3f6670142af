"""Load a manifest (``cellar.yaml``) and resolve the files it names, before anything is written.

Every path is taken relative to the manifest's folder and must stay inside it, symlinks
included; errors name the file and the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from registry import inputs
from registry.errors import InvalidInput, ManifestError
from registry.formats.safetensors_index import (
    SafetensorsError,
    TensorRange,
    is_safetensors,
    read_index,
)
from registry.models import Manifest, Resolved, SourceFile

DEFAULT_NAME = "cellar.yaml"


def load(path: str | Path, **overrides: Any) -> Resolved:
    """Parse and validate a manifest file, apply ``overrides`` (e.g. version), resolve its files."""
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_NAME
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a mapping with model, version, ... at the top level")
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
            files[("weight", rel)] = SourceFile("weight", rel, path, _tensors(path, rel, where))
    for name, entry in manifest.prompts.items():
        where = f"prompts.{name}"
        path = _regular_file(root, _inside(root, real_root, entry, where), where)
        _check_text(path, where)
        files[("prompt", name)] = SourceFile("prompt", name, path)
    return Resolved(manifest, root, list(files.values()))


def read_yaml(path: str | Path) -> Any:
    """The YAML document in ``path``, read by the one strict loader every manifest goes through:
    no aliases, no duplicate keys, at most 1 MiB. A ManifestError names the file and line."""
    path = Path(path)
    return _parse_yaml(path, _read_text(path))


def _read_text(path: Path) -> str:
    from registry.formats import safe_yaml

    try:
        if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
            raise ManifestError(f"{path}: not a regular file; pass the manifest's path")
        with open(path, "rb") as f:
            raw = f.read(safe_yaml.MAX_BYTES + 1)  # bounded: never a whole huge file in memory
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest; write one or pass its path") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    if len(raw) > safe_yaml.MAX_BYTES:
        raise ManifestError(f"{path}: larger than {safe_yaml.MAX_BYTES >> 20} MiB; a manifest names its "
                            "files, it does not hold them")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc})") from None


def _parse_yaml(path: Path, text: str) -> Any:
    import yaml  # only pushes need it

    from registry.formats import safe_yaml

    try:
        return safe_yaml.loads(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if isinstance(exc, safe_yaml.Refused):
            raise ManifestError(f"{path}{where}: {problem}") from None
        raise ManifestError(f"{path}{where}: malformed YAML ({problem})") from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg.removeprefix('Value error, ')}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _rule(check, *args) -> None:
    """Run an ``inputs`` check; its InvalidInput becomes a ManifestError (the source is added later)."""
    try:
        check(*args)
    except InvalidInput as exc:
        raise ManifestError(str(exc)) from None


def _real(path: Path, shown: str, where: str) -> Path:
    """``path`` with every symlink followed; a loop is the user's to fix, not an internal error."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # RuntimeError until Python 3.13, OSError(ELOOP) after
        raise ManifestError(f"{where}: {shown!r} is a symlink loop; remove it or point it at a file") from None


def _inside(root: Path, real_root: Path, entry: str, where: str) -> Path:
    if not entry or "\x00" in entry or "\\" in entry or PurePosixPath(entry).is_absolute():
        raise ManifestError(f"{where}: {entry!r} must be a relative path inside {root}")
    _rule(inputs.check_file_name, entry, where)
    target = root / entry
    if not _is_within(_real(target, entry, where), real_root):
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
                shown = inputs.safe_for_terminal(Path(dirpath, name).relative_to(root))
                raise ManifestError(f"{where}: {shown} is a symlinked folder; list its target instead")
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            _rule(inputs.check_file_name, rel, f"{where}: file name")
            if not _is_within(_real(path, rel, where), real_root):
                raise ManifestError(f"{where}: {rel} is a symlink pointing outside {root}")
            yield _regular_file(root, path, where)


def _regular_file(root: Path, path: Path, where: str) -> Path:
    if not path.is_file():
        raise ManifestError(f"{where}: {path.relative_to(root)} is not a regular file")
    if not os.access(path, os.R_OK):
        raise ManifestError(f"{where}: {path.relative_to(root)} is not readable; check its permissions")
    return path


def _tensors(path: Path, rel: str, where: str) -> list[TensorRange]:
    if not is_safetensors(path):
        return []
    try:
        found = read_index(path)
    except (SafetensorsError, OSError) as exc:
        raise ManifestError(f"{where}: {path.name} is not a valid safetensors file ({exc})") from None
    for t in found:  # stored in VARCHAR columns: refused here, alike on SQLite and PostgreSQL
        _rule(inputs.check_tensor, t.name, t.dtype, json.dumps(list(t.shape)), f"{where}: {rel}")
    return found


def _check_text(path: Path, where: str) -> None:
    """A prompt template: UTF-8 text within the size limit (read no further than the limit)."""
    try:
        limit = inputs.max_prompt_bytes()
        _rule(inputs.check_prompt_size, path.stat().st_size, where, path.name)
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # it may have grown since stat
        _rule(inputs.check_prompt_size, len(data), where, path.name)
        _rule(inputs.check_prompt_text, data.decode("utf-8"), where, path.name)
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
