"""What a user types to name a version: ``model@version``, a bare ``version`` (the model guessed
when only one model has that version), or an environment (the version deployed there)."""

from __future__ import annotations

from pathlib import Path

from registry import ledger
from registry.errors import InvalidInput, NotFound
from registry.models import check_name, check_version
from registry.store.sql import Store, environments, releases, versions
from registry.versions import manifest as manifest_mod


def resolve(store: Store, ref: str) -> tuple[str, str]:
    """``model@version`` or ``version`` -> (model, version); a bare version names the one model
    that has it (./cellar.yaml's model breaks a tie)."""
    model, sep, version = ref.rpartition("@")
    if not version:
        raise InvalidInput(f"{ref!r} is not a version reference: write v1.3 or model@v1.3")
    try:
        check_version(version)
        model = check_name(model, "model") if sep else _model_having(store, version)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return model, version


def _model_having(store: Store, version: str) -> str:
    with store.read() as conn:
        having = versions.models_with(conn, version)
        if not having and not versions.model_names(conn):
            raise NotFound("the registry holds no models yet: push one with `registry push`")
    if len(having) == 1:
        return having[0]
    if not having:
        raise NotFound(f"no version {version} in any model: see `registry list`")
    named = _named_here()
    if isinstance(named, str) and named in having:
        return named
    raise InvalidInput(f"which model? write MODEL@{version} (models having {version}: {', '.join(having[:5])})")


def default_model(store: Store, ref: str) -> str:
    """The only model, or the one the manifest in the working directory names."""
    with store.read() as conn:
        names = versions.model_names(conn)
    if len(names) == 1:
        return names[0]
    named = _named_here()
    if isinstance(named, str) and named in names:
        return named
    if not names:
        raise NotFound("the registry holds no models yet: push one with `registry push`")
    raise InvalidInput(f"which model? write MODEL@{ref} (models: {', '.join(names[:5])})")


def _named_here() -> object:
    """The ``model:`` of ./cellar.yaml, unchecked; None when there is none."""
    here = Path.cwd() / manifest_mod.DEFAULT_NAME
    if not here.is_file():
        return None
    try:
        data = manifest_mod.read_yaml(here)
        return data.get("model") if isinstance(data, dict) else None
    except Exception:  # an unreadable manifest just does not help guess
        return None


def deployed(store: Store, env: str) -> str | None:
    """``model@version`` running in environment ``env``; None if ``env`` is no environment."""
    with store.read() as conn:
        if environments.get(conn, env) is None:
            return None
        running = ledger.current(releases.current_and_pending(conn, env))
    if running is None:
        raise NotFound(f"nothing is deployed in {env}")
    return f"{running.model}@{running.version}"


def deployed_image(store: Store, env: str) -> str | None:
    """The image digest the deployed release of ``env`` runs, as its ledger pinned it (after
    ``promote --allow-retag`` not the one its version recorded); None when unknown."""
    with store.read() as conn:
        running = ledger.current(releases.current_and_pending(conn, env))
    return running.image_digest if running else None


def promote_source(store: Store, ref: str, env: str | None) -> tuple[str, str]:
    """The version ``promote`` deploys: ``ref`` itself, or what environment ``ref`` runs."""
    if "@" not in ref and (running := deployed(store, ref)) is not None:
        if env == ref:
            raise InvalidInput(f"cannot promote {ref} into itself: pass --env ENV")
        return resolve(store, running)
    return resolve(store, ref)
