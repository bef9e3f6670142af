"""``registry init`` and ``registry db upgrade``: a home's folders, its schema through the
migrations, its signing key (trusted on first use, once) and the event that records each.

Functions of paths, not Actions: no registry (no ``Configuration``) exists until they are done.
"""

from __future__ import annotations

from pathlib import Path

from registry import home as home_mod
from registry.errors import StorageError
from registry.models import InitResult
from registry.store.files.blobs import BlobStore
from registry.store.sql import Store, events, masked_url, migrate, sealing
from registry.trust import seals


def init(path: str | Path | None, *, actor: str, db_url: str | None) -> tuple[home_mod.Home, Store, InitResult]:
    """Create (or bring up to date) the home at ``path``; its store stays open for the caller."""
    home = home_mod.for_init(path, db_url=db_url)
    store = Store(home.db_url, source=home.db_source)  # a malformed URL is refused before any folder exists
    _create_folders(home)
    before = store.schema_revision()
    migrate.upgrade(store)
    _seal(store, home, actor=actor)
    if home.db_source in ("--db-url", home_mod.DB_URL_VAR):
        home_mod.write_config(home, home.db_url)
    created = before is None
    if created:
        with store.write() as conn:
            events.append(conn, actor=actor, action="init", object=str(home.path),
                          detail={"db": masked_url(home.db_url)}, db_user=store.db_user(conn))
    return home, store, InitResult(home=str(home.path), db_url=masked_url(home.db_url), created=created)


def upgrade(path: str | Path | None, *, actor: str) -> tuple[str | None, str]:
    """Migrate the home's database to the schema this program needs; (before, after)."""
    home = home_mod.locate(path)
    store = Store(home.db_url, source=home.db_source)
    try:
        before = store.schema_revision()
        migrate.upgrade(store)
        _seal(store, home, actor=actor)
        after = store.schema_revision()
        assert after is not None  # upgraded: at the head revision
        if before != after:
            with store.write() as conn:
                events.append(conn, actor=actor, action="db-upgrade", object="schema",
                              detail={"from": before, "to": after}, db_user=store.db_user(conn))
        return before, after
    finally:
        store.close()


def _seal(store: Store, home: home_mod.Home, *, actor: str) -> None:
    """Load the signing key, or create it and trust what the record holds, once: a home that
    never had a key seals its rows when it gets one, and an audit event says how many. A home
    that has a key seals nothing here: an unsealed row there was written (or unsealed) by
    someone without the key, and `registry audit verify` keeps naming it."""
    first_use = not seals.key_path(home.path).exists()
    store.key = seals.load_or_create_key(home.path, create=True)
    if not first_use:
        return
    with store.write() as conn:
        if count := sealing.seal_unsealed(conn):
            events.append(conn, actor=actor, action="seal", object="record",
                          detail={"rows_sealed": count, "key": store.key.id}, db_user=store.db_user(conn))


def _create_folders(home: home_mod.Home) -> None:
    try:
        home.path.mkdir(parents=True, exist_ok=True)
        BlobStore(home.blobs).create()
    except OSError as exc:
        where = exc.filename or home.path
        raise StorageError(f"cannot create the registry folder {where} ({exc.strerror or exc}): "
                           "pick a writable place with REGISTRY_HOME or `registry init PATH`") from None
